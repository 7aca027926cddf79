"""The local sandbox provider: creates a build's sandbox directory, reaps a dead server's.

Layout: ``{workspace_root}/{build_id}/`` is the sandbox dir (the steps' ``HOME``) and its
``work/`` the steps' working directory, holding a copy of the workspace and the inline files.

What this module guarantees:

- a step sees only an allow-list of the server's environment variables (never its secrets);
- the workspace copy never brings in what a symlink outside the workspace points at, and the
  inline files cannot be written outside ``work/``;
- a server that died (``kill -9``) leaves a :meth:`LocalSandbox.state` behind from which a
  new server process kills the leftovers (:meth:`LocalSandboxProvider.reap`), guarded
  against pid reuse.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .base import ProviderStatus, SandboxError
from .environment import DEFAULT_ENV_PASSTHROUGH, MARKER_ENV, SECRET_ENV, check_env
from .groups import StepGroups
from .local import LocalSandbox
from .processes import reap_leftovers
from .provider_base import ProviderBase
from .workspace_copy import delete_tree, fill_work

log = logging.getLogger(__name__)

_BUILD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class LocalSandboxProvider(ProviderBase):
    """Creates :class:`LocalSandbox` directories under ``workspace_root``: the plain
    process sandbox, and the base of the isolated one."""

    name = "local"

    def __init__(
        self, *, env_passthrough: Sequence[str] = DEFAULT_ENV_PASSTHROUGH, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        #: ``workspace_root``, absolute and resolved: compared with processes' cwd and HOME.
        self.root = Path(self.workspace_root).expanduser().resolve()
        self.env_passthrough = tuple(env_passthrough)
        self._bash = shutil.which("bash") or "/bin/bash"

    def base_env(self, build_id: str, sandbox_dir: Path) -> dict[str, str]:
        """The environment every step starts from (before the build's own ``env``)."""
        env = {
            key: os.environ[key]
            for key in self.env_passthrough
            if key in os.environ and not SECRET_ENV.match(key)
        }
        env["HOME"] = str(sandbox_dir)
        env[MARKER_ENV] = build_id
        env["CI"] = "true"
        return env

    async def create(
        self,
        build_id: str,
        *,
        workspace: Path | None,
        files: Mapping[str, str],
        env: Mapping[str, str],
        network: bool = True,
    ) -> LocalSandbox:
        """Prepare the directory in a thread (a copy can be large); if the caller is
        cancelled meanwhile, what the copy made is removed once it is done.

        ``network=False`` needs an isolated provider: plain processes share the host's."""
        if not isinstance(build_id, str) or not _BUILD_ID.match(build_id):
            raise SandboxError("invalid build id for a local sandbox")
        check_env(env, "build env")
        await self.admit(network)
        directory = self.root / build_id
        job = asyncio.ensure_future(
            asyncio.to_thread(self._prepare, directory, workspace, dict(files))
        )
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            # the copy goes on in its thread: remove what it made once it is done
            job.add_done_callback(
                lambda _: threading.Thread(
                    target=delete_tree, args=(directory,), daemon=True
                ).start()
            )
            raise
        base = self.base_env(build_id, directory)
        base.update(env)
        return LocalSandbox(
            build_id=build_id,
            directory=directory,
            base_env=base,
            bash=self._bash,
            max_line_bytes=self.max_line_bytes,
            kill_grace=self.kill_grace,
            groups=self._groups(f"local-{build_id}", directory, base, network),
        )

    async def admit(self, network: bool) -> None:
        if not network:
            raise SandboxError(
                "network: false needs the isolated local provider (plain processes "
                "share the host's network)"
            )

    def _groups(
        self, sandbox_id: str, directory: Path, base_env: Mapping[str, str], network: bool
    ) -> StepGroups | None:
        """How the sandbox runs its steps: None for plain process groups."""
        return None

    def _prepare(self, directory: Path, workspace: Path | None, files: dict[str, str]) -> None:
        """Make ``directory`` (never reusing one) with ``work/``, the workspace copy and the
        inline files; on any failure remove it, so a failed create leaves nothing behind."""
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.mkdir(mode=0o700)
        except FileExistsError:
            raise SandboxError(
                f"the sandbox directory for {directory.name} already exists"
            ) from None
        except OSError as exc:
            raise SandboxError(f"cannot create the sandbox directory: {exc.strerror}") from None
        try:
            work = directory / "work"
            work.mkdir()
            fill_work(work, workspace, files, skip_dirs=[str(self.root)], label=directory.name)
        except BaseException:
            delete_tree(directory)
            raise

    async def reap(self, sandbox_id: str, state: Mapping[str, Any]) -> bool:
        """Kill what a dead server left of this sandbox; never raises for dead processes.

        Only on the host that recorded ``state``. For each recorded process group: if its
        leader still has the recorded create time, every member is killed; otherwise (the
        leader is gone, its pid maybe reused) only members whose cwd is inside the
        recorded sandbox dir. Also killed: processes carrying this build's environment
        marker whose ``HOME`` is the sandbox dir or whose cwd is inside it (``setsid``
        children, jobs of groups that were never recorded).
        """
        if state.get("host") not in (None, socket.gethostname()):
            return False  # its processes are on another host: only a server there can
        try:
            await asyncio.to_thread(reap_leftovers, sandbox_id, dict(state))
        except Exception:  # reaping is best effort: log, never fail start-up
            log.exception("sandbox %s: reaping failed", sandbox_id)
        return True

    async def remove(self, sandbox_id: str, state: Mapping[str, Any]) -> bool:
        """:meth:`reap`, then delete the sandbox dir recorded in ``state`` (for a build
        deleted after the server that ran it died). Only a dir directly under this
        provider's ``workspace_root`` is removed."""
        if not await self.reap(sandbox_id, state):
            return False
        directory = state.get("dir")
        if state.get("host") != socket.gethostname() or not isinstance(directory, str):
            return True
        path = Path(directory)
        if path.parent == self.root and _BUILD_ID.match(path.name):
            await asyncio.to_thread(delete_tree, path)
        return True


class ProcessProvider(LocalSandboxProvider):
    """``process``: steps as plain processes of the server's user (no isolation).

    Made on every server, so that any server can reap what a dead one left of such a
    sandbox; builds may use it only with ``allow_unisolated`` (its :meth:`check`)."""

    name = "process"

    def __init__(self, *, allowed: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.allowed = allowed

    async def check(self) -> ProviderStatus:
        if not self.allowed:
            return ProviderStatus(
                False,
                False,
                "plain processes can read everything the server can; "
                "set c.ProviderCatalog.allow_unisolated = True to allow them",
            )
        return ProviderStatus(
            True, False, "UNISOLATED plain processes of the server's user (allow_unisolated)"
        )


__all__ = [
    "DEFAULT_ENV_PASSTHROUGH",
    "MARKER_ENV",
    "LocalSandboxProvider",
    "ProcessProvider",
]

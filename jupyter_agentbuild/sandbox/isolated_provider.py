"""The isolated local provider: the local sandbox, each step in Linux namespaces.

Same layout, workspace copy, environment allow-list and reaping as
:class:`.local_provider.LocalSandboxProvider`; steps and previews run under bubblewrap
as planned by :class:`.isolation.IsolationPlan` (see there for what is hidden and why).

Availability is found out, not assumed: :meth:`check` runs one isolated ``true`` at
start-up. Where namespaces cannot be made (a container that forbids them, no
``bwrap``), builds are refused with the reason, unless the admin opted in to plain
processes (``allow_unisolated``): then they run unisolated, and the log says so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from traitlets import Int, List, Unicode

from .base import ProviderStatus, SandboxError
from .groups import StepGroups
from .isolation import IsolationPlan, StepLimits, find_bwrap, find_perl, probe, python_prefixes
from .local_provider import LocalSandboxProvider
from .namespaces import NamespaceGroups
from .workspace_copy import delete_tree

log = logging.getLogger(__name__)


class IsolatedLocalProvider(LocalSandboxProvider):
    """Local sandboxes whose steps cannot see the server's files, processes or secrets."""

    name = "local"

    hidden_paths = List(
        Unicode(),
        help="""More directories isolated builds must not see, besides those always hidden
        (the home dirs, the Jupyter data, runtime and config dirs, the server root, the
        sandboxes, the database's directory, the artifact store).""",
    ).tag(config=True, legacy="sandbox_hidden_paths")
    readonly_paths = List(
        Unicode(),
        help="""Directories inside hidden ones that isolated builds get back read-only
        (e.g. a toolchain in the home dir). The server's Python installation always is.""",
    ).tag(config=True, legacy="sandbox_readonly_paths")
    max_processes = Int(
        2048,
        help="""Processes per user an isolated step may have (RLIMIT_NPROC; the kernel does
        not enforce it for root). 0: no limit.""",
    ).tag(config=True, legacy="sandbox_max_processes")
    max_memory = Int(
        8 * 1024**3,
        help="Bytes of memory one process of an isolated step may use (RLIMIT_DATA). 0: no limit.",
    ).tag(config=True, legacy="sandbox_max_memory")
    max_file_size = Int(
        4 * 1024**3,
        help="Largest file (bytes) an isolated step may write (RLIMIT_FSIZE). 0: no limit.",
    ).tag(config=True, legacy="sandbox_max_file_size")

    def __init__(
        self,
        *,
        private_paths: Sequence[str] = (),
        allow_unisolated: bool = False,
        **kwargs: Any,
    ) -> None:
        """``private_paths``: what this server keeps from builds, found at start-up (its
        data, runtime and config dirs, the database's directory...); ``allow_unisolated``:
        where namespaces cannot be made, run builds as plain processes rather than refuse."""
        super().__init__(**kwargs)
        configured = (os.path.abspath(os.path.expanduser(p)) for p in self.hidden_paths)
        # the sandboxes themselves are hidden from every build (each gets its own back)
        self.plan = IsolationPlan(
            hidden=(*private_paths, *configured, str(self.root)),
            readonly=(*python_prefixes(), *self.readonly_paths),
            limits=StepLimits(
                max_processes=self.max_processes,
                max_memory=self.max_memory,
                max_file_size=self.max_file_size,
            ),
        )
        self.allow_unisolated = allow_unisolated
        self._bwrap = find_bwrap()
        self._perl = find_perl()
        self._status: ProviderStatus | None = None
        self._lock = asyncio.Lock()

    async def check(self) -> ProviderStatus:
        """Run one isolated step (once); the answer is kept for the server's life."""
        async with self._lock:
            if self._status is None:
                why = await asyncio.to_thread(self._probe)
                if why is None:
                    self._status = ProviderStatus(
                        True,
                        True,
                        f"bubblewrap ({self._bwrap}): Linux namespaces; limits by rlimits",
                        network_off=True,
                    )
                elif self.allow_unisolated:
                    self._status = ProviderStatus(
                        True,
                        False,
                        f"UNISOLATED (allow_unisolated is set): {why}",
                    )
                else:
                    self._status = ProviderStatus(
                        False,
                        False,
                        f"{why}. Local builds are refused; install bubblewrap where "
                        "namespaces work, or set c.ProviderCatalog.allow_unisolated = True "
                        "to run them as plain processes",
                    )
            return self._status

    def _probe(self) -> str | None:
        if self._bwrap is None:
            return "bubblewrap (bwrap) is not installed"
        if self._perl is None:
            return "perl is not installed (the isolated sandbox's pid 1 is a Perl script)"
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create {self.root}: {exc.strerror}"
        scratch = self.root / f".probe-{secrets.token_hex(6)}"
        try:
            scratch.mkdir(mode=0o700)
            return probe(self._bwrap, self._perl, self.plan, scratch)
        except OSError as exc:
            return f"cannot probe namespaces: {exc.strerror or exc}"
        finally:
            delete_tree(scratch)

    def base_env(self, build_id: str, sandbox_dir: Path) -> dict[str, str]:
        """The local environment, with the server's Python first on ``PATH`` when it is not
        there yet: the shims or home dirs that usually lead to it (pyenv, conda) are hidden,
        the installation itself is bound back read-only, so ``python`` still is this one."""
        env = super().base_env(build_id, sandbox_dir)
        bindir = os.path.dirname(sys.executable)
        path = env.get("PATH")
        if self.isolated and path is not None and bindir not in path.split(os.pathsep):
            env["PATH"] = os.pathsep.join((bindir, path))
        return env

    @property
    def isolated(self) -> bool:
        """Do new sandboxes run in namespaces (known after :meth:`check`)?"""
        return self._status is not None and self._status.isolated

    async def admit(self, network: bool) -> None:
        status = await self.check()
        if not status.available:
            raise SandboxError(status.detail)
        if not self.isolated:
            await super().admit(network)

    def _groups(
        self, sandbox_id: str, directory: Path, base_env: Mapping[str, str], network: bool
    ) -> StepGroups | None:
        if not self.isolated:
            log.warning("sandbox %s runs UNISOLATED (allow_unisolated)", sandbox_id)
            return None
        assert self._bwrap is not None and self._perl is not None
        return NamespaceGroups(
            sandbox_id=sandbox_id,
            directory=directory,
            base_env=base_env,
            bash=self._bash,
            kill_grace=self.kill_grace,
            bwrap=self._bwrap,
            perl=self._perl,
            plan=self.plan,
            network=network,
        )


__all__ = ["IsolatedLocalProvider"]

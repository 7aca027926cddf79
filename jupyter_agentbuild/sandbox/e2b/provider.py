"""Creates E2B sandboxes (through E2B's API), kills those a dead server left running.

The workspace copy and the inline files follow the local rules exactly: they are staged
with the local copy code (symlinks out of the workspace skipped, paths confined), packed
into one tar.gz and unpacked in the VM (one upload, one command, whatever the file count).
The key is given to the SDK and nowhere else (never logged, never in ``state``).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from traitlets import Int, Unicode, default, validate

from ..base import ProviderStatus, SandboxError
from ..environment import check_env
from ..provider_base import ProviderBase
from ..workspace_copy import fill_work
from .common import HOME, redacted
from .sandbox import E2BSandbox

log = logging.getLogger(__name__)

#: Where the staged workspace is uploaded, relative to the home directory.
_ARCHIVE = ".agentbuild-workspace.tar.gz"
#: The metadata key naming the build a VM runs (E2B's list filters on it).
BUILD_KEY = "agentbuild_build"
#: The environment every process in the VM gets.
VM_ENV = {"CI": "true"}


class E2BSandboxProvider(ProviderBase):
    """Creates E2B sandboxes; kills those a dead server left running."""

    name = "e2b"

    api_key = Unicode(
        None,
        allow_none=True,
        help="E2B API key (never logged or returned). Default None: env E2B_API_KEY.",
    ).tag(config=True, legacy="e2b_api_key")

    @default("api_key")
    def _api_key_default(self) -> str | None:
        return os.environ.get("E2B_API_KEY")

    @validate("api_key")
    def _strip_api_key(self, proposal: Any) -> str | None:
        key: str | None = proposal["value"]
        return key.strip() if key else key  # a key file's newline would end up in headers

    template = Unicode(
        None,
        allow_none=True,
        help="""E2B sandbox template for builds (default None: the SDK's code-interpreter
        template). Env fallback: AGENTBUILD_E2B_TEMPLATE.""",
    ).tag(config=True, legacy="e2b_template")

    @default("template")
    def _template_default(self) -> str | None:
        return os.environ.get("AGENTBUILD_E2B_TEMPLATE")

    sandbox_timeout = Int(
        3600,
        help="""Seconds E2B keeps a sandbox alive at most (its own timeout, a last resort
        behind ours): a build's VM is killed when the build, or its preview, ends.""",
    ).tag(config=True, legacy="e2b_sandbox_timeout")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: In the SDK's debug mode every "VM" is the one envd on this host: the build
        #: holding it (one at a time, wiped before and after use).
        self._debug_holder: str | None = None

    async def check(self) -> ProviderStatus:
        return ProviderStatus(True, True, "E2B cloud sandboxes: a VM per build")

    def __repr__(self) -> str:  # the key stays out of reprs and logs
        return f"E2BSandboxProvider(template={self.template!r})"

    def _sandbox(self, sdk: Any, build_id: str, env: Mapping[str, str]) -> E2BSandbox:
        debug = bool(getattr(sdk.connection_config, "debug", False))
        return E2BSandbox(
            sdk,
            build_id=build_id,
            base_env={**VM_ENV, **env},
            max_line_bytes=self.max_line_bytes,
            kill_grace=self.kill_grace,
            keep_alive=self.sandbox_timeout,
            on_destroy=(lambda: self._release(build_id)) if debug else None,
        )

    def _release(self, build_id: str) -> None:
        if self._debug_holder == build_id:
            self._debug_holder = None

    async def create(
        self,
        build_id: str,
        *,
        workspace: Path | None,
        files: Mapping[str, str],
        env: Mapping[str, str],
        network: bool = True,
    ) -> E2BSandbox:
        """Stage the workspace locally with the local rules, create the VM, upload the
        staged tree as one archive and unpack it into ``/home/user/work``."""
        from e2b_code_interpreter import AsyncSandbox

        check_env(env, "build env")
        await self.admit(network)
        archive = await asyncio.to_thread(_stage, build_id, workspace, dict(files))
        try:
            sdk = await AsyncSandbox.create(
                template=self.template,
                api_key=self._key,
                timeout=self.sandbox_timeout,
                metadata={BUILD_KEY: build_id},
                # VM-wide (envd's /init); the build's env goes with each command instead,
                # as its secrets must not outlive the build in the VM's settings
                envs=dict(VM_ENV),
                # the preview is reached through the proxy only (Jupyter auth, owner, CSP):
                # E2B's public URL answers only requests bearing the traffic token
                network={"allow_public_traffic": False},
            )
        except Exception as exc:
            raise SandboxError(f"E2B could not create a sandbox: {self._safe(exc)}") from None
        debug = bool(getattr(sdk.connection_config, "debug", False))
        if debug:
            if self._debug_holder is not None:
                raise SandboxError(
                    "the E2B debug sandbox (envd on this host) is in use by another build"
                )
            self._debug_holder = build_id
        sandbox = self._sandbox(sdk, build_id, env)
        try:
            if debug:  # what an earlier build left (a crash skipped its wipe)
                await sandbox.delete_files()
            await sdk.files.write(f"{HOME}/{_ARCHIVE}", archive)
            unpack = f"mkdir -p work && tar -xzf {_ARCHIVE} -C work && rm -f {_ARCHIVE}"
            await sdk.commands.run(unpack, cwd=HOME, timeout=600)
            await sandbox.save_env()
        except BaseException as exc:  # cancelled too: no sandbox_id is recorded yet
            await asyncio.shield(sandbox.destroy())
            if not isinstance(exc, Exception):
                raise
            raise SandboxError(
                f"could not copy the workspace into E2B: {self._safe(exc)}"
            ) from None
        return sandbox

    async def reap(self, sandbox_id: str, state: Mapping[str, Any]) -> bool:
        """Kill the VM a dead server left behind, from any host (by id). A failed kill is
        logged, not retried: E2B's own timeout ends the VM later."""
        from e2b_code_interpreter import AsyncSandbox

        vm = state.get("sandbox_id")
        if not isinstance(vm, str) or not vm:
            return True
        try:
            await AsyncSandbox.kill(vm, api_key=self._key)
        except Exception as exc:
            log.warning("agentbuild: killing E2B sandbox %s failed: %s", vm, self._safe(exc))
        return True

    async def reattach(
        self, build_id: str, state: Mapping[str, Any], *, step: int, skip: Mapping[str, int]
    ) -> E2BSandbox:
        """The VM of a build whose server died, connected again (by id, through E2B's
        API, which also gives it its full lifetime again), with the build's environment
        as kept in the VM; ``step`` (if it started) is followed rather than run again,
        skipping the ``skip`` line pieces per stream already stored."""
        from e2b_code_interpreter import AsyncSandbox

        vm = state.get("sandbox_id")
        if not isinstance(vm, str) or not vm:
            raise SandboxError("no E2B sandbox recorded for this build")
        try:
            sdk = await AsyncSandbox.connect(vm, api_key=self._key, timeout=self.sandbox_timeout)
        except Exception as exc:
            raise SandboxError(f"E2B could not reconnect: {self._safe(exc)}") from None
        if bool(getattr(sdk.connection_config, "debug", False)):
            self._debug_holder = build_id
        sandbox = self._sandbox(sdk, build_id, {})
        try:
            await sandbox.load_env()
        except Exception as exc:
            raise SandboxError(f"the build's VM cannot be resumed: {self._safe(exc)}") from None
        sandbox.resume_step, sandbox.resume_skip = step, dict(skip)
        return sandbox

    async def find(self, build_id: str) -> list[str]:
        """The ids of the running VMs created for ``build_id`` (by their metadata): what a
        server that died between creating a VM and recording its id left behind."""
        from e2b import SandboxQuery
        from e2b_code_interpreter import AsyncSandbox

        paginator = AsyncSandbox.list(
            query=SandboxQuery(metadata={BUILD_KEY: build_id}), api_key=self._key
        )
        found: list[str] = []
        while paginator.has_next:
            found += [info.sandbox_id for info in await paginator.next_items()]
        return found

    async def reap_build(self, build_id: str) -> int:
        """Kill every VM of ``build_id`` found by its metadata; how many were."""
        try:
            found = await self.find(build_id)
        except Exception as exc:
            log.warning("agentbuild: listing E2B sandboxes failed: %s", self._safe(exc))
            return 0
        for vm in found:
            await self.reap(f"e2b-{vm}", {"sandbox_id": vm})
        return len(found)

    async def remove(self, sandbox_id: str, state: Mapping[str, Any]) -> bool:
        """:meth:`reap`: the VM's files go with it."""
        return await self.reap(sandbox_id, state)

    @property
    def _key(self) -> str:
        return self.api_key or ""

    def _safe(self, exc: BaseException) -> str:
        return redacted(exc, self._key)


def _stage(build_id: str, workspace: Path | None, files: dict[str, str]) -> bytes:
    """The workspace copy plus inline files, laid out as the local sandbox does
    (``fill_work``), packed into one tar.gz (links kept as links, modes kept)."""
    with tempfile.TemporaryDirectory(prefix="agentbuild-stage-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        fill_work(work, workspace, files, label=build_id)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
            for child in sorted(work.iterdir()):
                tar.add(child, arcname=child.name)
        return buffer.getvalue()

"""E2B cloud sandboxes (``e2b-code-interpreter``'s SDK), behind the same Protocol as local ones.

One E2B sandbox (a micro-VM) per build. What the local sandbox guarantees holds here too,
by other means:

- the workspace copy and the inline files follow the local rules exactly: they are staged
  with the local copy code (symlinks out of the workspace skipped, paths confined), packed
  into one tar.gz and unpacked in the VM (one upload, one command, whatever the file count);
- steps run under ``bash`` with ``set -eo pipefail`` in ``/home/user/work``; stdout and
  stderr are split into lines as locally (UTF-8 with replacement, long lines cut and marked
  ``continued``), and the SDK awaits our callbacks, so a slow consumer slows the stream;
- nothing a step starts survives it: every step carries a marker variable, and after the
  step (and on timeout or cancel) every process in the VM carrying it is sent SIGTERM,
  then SIGKILL after the grace period;
- the VM is killed when the build (or its preview) ends, and by id after a crash
  (:meth:`E2BSandboxProvider.reap`); E2B's own sandbox timeout is the last resort.

The key is given to the SDK and nowhere else (never logged, never in ``state``).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import shlex
import tarfile
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from ..swallow import swallowed
from .base import OutputSink, SandboxError, ServiceFailed, StepResult, WorkspaceEntry
from .environment import _check_env, command_environment
from .lines import LineSplitter
from .workspace_copy import fill_work

log = logging.getLogger(__name__)

#: What an E2B key looks like, to blank out of error texts whatever its quoting.
_KEY_SHAPE = re.compile(r"e2b_[A-Za-z0-9_\-]+")

#: The steps' working directory in the VM (E2B's default user is ``user``).
WORK_DIR = "/home/user/work"
#: The variable that marks every process of one step (or of the service).
STEP_MARKER = "AGENTBUILD_STEP"
#: Where the staged workspace is uploaded, relative to the home directory (commands here
#: use paths relative to their ``cwd``, never absolute ones).
_HOME = "/home/user"
_ARCHIVE = ".agentbuild-workspace.tar.gz"

#: Kills every process whose environment holds ``$1`` (``NAME=value``): SIGTERM, then
#: SIGKILL after ``$2`` milliseconds. Reads /proc, so it needs nothing installed in the VM;
#: runs as root, so it sees every user's processes (one that cleared its environment, or
#: went through ``sudo``, is not found: the VM itself is killed when the build ends).
_SWEEP = r"""
marked() { for p in /proc/[0-9]*; do
  if tr '\0' '\n' < "$p/environ" 2>/dev/null | grep -qxF "$1"; then echo "${p#/proc/}"; fi
done; }
pids=$(marked "$1"); [ -z "$pids" ] && exit 0
kill -TERM $pids 2>/dev/null
end=$(( $(date +%s%N) + $2 * 1000000 ))
while [ "$(date +%s%N)" -lt "$end" ]; do
  pids=$(marked "$1"); [ -z "$pids" ] && exit 0; sleep 0.05
done
pids=$(marked "$1"); [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
exit 0
"""


def _bash(command: str) -> str:
    return "exec bash --noprofile --norc -c " + shlex.quote("set -eo pipefail\n" + command)


class _Run:
    """One command running in the VM: its handle, its output splitters, its end."""

    def __init__(self, marker: str, max_line_bytes: int, on_output: OutputSink) -> None:
        self.marker = marker
        self.on_output = on_output
        self.splitters = {
            "stdout": LineSplitter(max_line_bytes),
            "stderr": LineSplitter(max_line_bytes),
        }
        self.lock = asyncio.Lock()
        self.handle: Any = None
        self.waited: asyncio.Future[int] | None = None
        #: What our own output sink raised (the store refusing logs, say): the SDK ends the
        #: stream on it, and the step reports it rather than a lost connection.
        self.error: BaseException | None = None
        #: Set when ``run_step`` is over, however it ended (what ``cancel`` waits for: the
        #: SDK's own wait can hang on a stalled stream).
        self.done = asyncio.Event()

    async def emit(self, stream: str, text: str) -> None:
        batches = self.splitters[stream].feed(text.encode("utf-8", "surrogatepass"))
        try:
            for lines, continued in batches:
                async with self.lock:
                    await self.on_output(stream, lines, continued)
        except Exception as exc:
            self.error = exc
            raise

    async def flush(self) -> None:
        for stream, splitter in self.splitters.items():
            for lines, continued in splitter.finish():
                async with self.lock:
                    await self.on_output(stream, lines, continued)


async def _exit_code(handle: Any) -> int:
    """The command's exit status (the SDK raises for a non-zero one)."""
    from e2b import CommandExitException

    try:
        result = await handle.wait()
    except CommandExitException as exc:
        return int(exc.exit_code)
    return int(result.exit_code)


async def _discard(stream: str, lines: list[str], continued: bool) -> None:
    return None


class E2BSandbox:
    """One build's E2B sandbox (see the module docstring)."""

    def __init__(
        self,
        sdk_sandbox: Any,
        *,
        build_id: str,
        base_env: Mapping[str, str],
        max_line_bytes: int,
        kill_grace: float,
        keep_alive: int,
    ) -> None:
        self.sdk = sdk_sandbox
        self.id = f"e2b-{sdk_sandbox.sandbox_id}"
        self.build_id = build_id
        self._base_env = dict(base_env)
        self._max_line_bytes = max_line_bytes
        self._kill_grace = kill_grace
        self._keep_alive = keep_alive
        self._steps: dict[str, _Run] = {}
        self._cancel = asyncio.Event()
        self._service: _Run | None = None
        self._closed = False
        self._checked_dirs: set[str] = set()  # workspace dirs known not to be links

    def state(self) -> dict[str, Any]:
        """What a later server needs to kill the VM: its id (never the key)."""
        return {"sandbox_id": self.sdk.sandbox_id}

    # ---- commands

    async def _start(
        self, command: str, marker: str, on_output: OutputSink, env: Mapping[str, str] | None
    ) -> _Run:
        if self._closed:
            raise SandboxError("the sandbox is closed")
        envs = command_environment(command, self._base_env, env)
        envs[STEP_MARKER] = marker
        run = _Run(marker, self._max_line_bytes, on_output)
        try:
            run.handle = await self.sdk.commands.run(
                _bash(command),
                background=True,
                envs=envs,
                cwd=WORK_DIR,
                on_stdout=lambda text: run.emit("stdout", text),
                on_stderr=lambda text: run.emit("stderr", text),
                timeout=0,
                retain_output=False,
            )
        except Exception as exc:
            raise SandboxError(f"E2B could not start the command: {_redacted(exc)}") from None
        run.waited = asyncio.ensure_future(_exit_code(run.handle))
        return run

    async def _sweep(self, run: _Run) -> None:
        """Make sure nothing carrying the run's marker is left in the VM."""
        with swallowed(log, f"killing E2B command {run.marker}", describe=_redacted):
            await run.handle.kill()
        args = f"{STEP_MARKER}={run.marker} {max(0, int(self._kill_grace * 1000))}"
        try:
            await self.sdk.commands.run(
                f"bash -c {shlex.quote(_SWEEP)} sweep {args}",
                user="root",
                cwd="/",
                timeout=self._kill_grace + 30,
            )
        except Exception as exc:
            log.warning("sandbox %s: cleaning up after a step failed: %s", self.id, _redacted(exc))

    async def run_step(
        self,
        command: str,
        *,
        step: int,
        timeout: float | None,  # noqa: ASYNC109 (the Protocol's signature)
        on_output: OutputSink,
        env: Mapping[str, str] | None = None,
    ) -> StepResult:
        """Run ``command`` in the VM's workspace; see the module docstring for the rules."""
        self._cancel.clear()
        marker = f"{self.build_id}.{step}.{uuid.uuid4().hex[:8]}"
        run = await self._start(command, marker, on_output, env)
        self._steps[marker] = run
        assert run.waited is not None
        cancelled: asyncio.Future[Any] = asyncio.ensure_future(self._cancel.wait())
        waited: asyncio.Future[Any] = run.waited
        try:
            done, _ = await asyncio.wait(
                {waited, cancelled}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            reason = "exit" if run.waited in done else "cancel" if cancelled in done else "timeout"
            await self._sweep(run)
            try:
                code = await asyncio.wait_for(asyncio.shield(run.waited), self._kill_grace + 30)
            except Exception as exc:
                if run.error is not None:
                    raise run.error from None
                if reason == "exit":
                    raise SandboxError(
                        f"lost the step's connection to E2B: {_redacted(exc)}"
                    ) from None
                code = -9
            await run.flush()
        except asyncio.CancelledError:
            # the caller was cancelled (server shutdown): stop the step in the VM first
            with swallowed(log, f"stopping E2B step {run.marker}", describe=_redacted):
                await asyncio.wait_for(asyncio.shield(self._sweep(run)), self._kill_grace + 5)
            raise
        finally:
            cancelled.cancel()
            self._steps.pop(marker, None)
            run.done.set()
        return StepResult(
            exit_code=code, timed_out=reason == "timeout", cancelled=reason == "cancel"
        )

    async def cancel(self) -> None:
        """Stop the running step; returns once it is gone (``run_step`` then returns)."""
        self._cancel.set()
        for run in list(self._steps.values()):
            await run.done.wait()

    async def close(self) -> None:
        self._closed = True  # first, as the local sandbox does: no step starts meanwhile
        await self.stop_service()
        await self.cancel()

    async def destroy(self) -> None:
        """Kill the VM (with it, its files: artifacts were collected before). The kill
        happens whatever becomes of the polite stop before it (a slow envd, or the caller's
        time limit cancelling us): a VM nobody kills would run until E2B's own timeout."""
        try:
            await asyncio.wait_for(self.close(), self._kill_grace + 10)
        except Exception as exc:
            log.warning("sandbox %s: stopping its commands failed: %s", self.id, _redacted(exc))
        finally:
            try:
                await asyncio.shield(self.sdk.kill())
            except Exception as exc:
                log.warning(
                    "sandbox %s: killing the E2B sandbox failed: %s", self.id, _redacted(exc)
                )

    # ---- the port primitive

    async def start_service(
        self,
        command: str,
        *,
        port: int | None = None,
        ready_timeout: float = 60.0,
        ready_path: str | None = None,
        on_output: OutputSink | None = None,
        env: Mapping[str, str] | None = None,
    ) -> str:
        """Start the preview server in the VM and wait until E2B's edge reaches it
        (an HTTP GET of ``ready_path``, else ``/``, answered by the app itself); return
        its public URL, ``https://{port}-{id}.{domain}`` (``http://localhost:{port}`` in
        the SDK's debug mode)."""
        if self.service_running():
            raise SandboxError("a service is already running in this sandbox")
        await self.stop_service()
        port = port or 8000
        extra = {"PORT": str(port), **(env or {})}
        marker = f"{self.build_id}.service.{uuid.uuid4().hex[:8]}"
        run = await self._start(command, marker, on_output or _discard, extra)
        self._service = run
        debug = bool(getattr(self.sdk.connection_config, "debug", False))
        url = ("http" if debug else "https") + "://" + str(self.sdk.get_host(port))
        if not debug:
            # the preview outlives the build's timeout
            with swallowed(log, "extending an E2B sandbox's timeout", describe=_redacted):
                await self.sdk.set_timeout(self._keep_alive)
        assert run.waited is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_timeout
        answer = "no answer"
        async with httpx.AsyncClient(timeout=5.0, headers=self.preview_headers()) as client:
            while True:
                try:
                    response = await client.get(url + (ready_path or "/"))
                    # E2B's edge answers 502 while nothing listens on the port
                    if response.status_code < (500 if ready_path else 502):
                        break
                    answer = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    answer = type(exc).__name__
                if run.waited.done():
                    code = run.waited.result() if not run.waited.exception() else None
                    await self.stop_service()
                    raise ServiceFailed(
                        f"the service exited with status {code} before it was ready on port {port}",
                        exit_code=code,
                    )
                if loop.time() >= deadline:
                    await self.stop_service()
                    raise ServiceFailed(
                        f"the service did not answer on port {port} within "
                        f"{ready_timeout:g}s ({answer})"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(run.waited), 0.2)
        return url

    def preview_headers(self) -> dict[str, str]:
        """E2B's traffic token: the VM was created without public traffic, so its URL
        answers only requests bearing it (the proxy's, after Jupyter's checks)."""
        token = getattr(self.sdk, "traffic_access_token", None)
        return {"e2b-traffic-access-token": token} if isinstance(token, str) and token else {}

    def service_running(self) -> bool:
        run = self._service
        return run is not None and run.waited is not None and not run.waited.done()

    async def wait_service(self) -> int | None:
        run = self._service
        if run is None or run.waited is None:
            return None
        try:
            return await asyncio.shield(run.waited)
        except Exception:
            return None

    async def stop_service(self) -> None:
        run, self._service = self._service, None
        if run is None:
            return
        await self._sweep(run)
        if run.waited is not None:
            with swallowed(log, f"waiting for E2B service {run.marker}", describe=_redacted):
                await asyncio.wait_for(asyncio.shield(run.waited), self._kill_grace + 30)
        with swallowed(log, f"flushing E2B service {run.marker}", describe=_redacted):
            await run.flush()

    # ---- workspace files

    async def list_files(
        self, *, prune: Callable[[str], bool] | None = None
    ) -> AsyncIterator[WorkspaceEntry]:
        """Walk ``/home/user/work`` in the VM, directory by directory, sorted, never
        following symlinks (E2B reports a link with its target and does not enter it)."""
        from e2b import FileType

        pending = [""]
        while pending:
            rel = pending.pop(0)
            try:
                listed = await self.sdk.files.list(f"{WORK_DIR}/{rel}".rstrip("/"), depth=1)
            except Exception as exc:
                raise SandboxError(
                    f"cannot list {rel or 'the workspace'}: {_redacted(exc)}"
                ) from None
            subdirs = []
            for info in sorted(listed, key=lambda e: e.name):
                path = f"{rel}/{info.name}" if rel else info.name
                if info.symlink_target:
                    yield WorkspaceEntry(path, "symlink", target=info.symlink_target)
                elif info.type == FileType.DIR:
                    yield WorkspaceEntry(path, "dir")
                    if prune is None or not prune(path):
                        subdirs.append(path)
                elif info.type == FileType.FILE:
                    yield WorkspaceEntry(path, "file", size=int(info.size))
                else:
                    yield WorkspaceEntry(path, "other")
            pending[0:0] = subdirs

    async def read_file(self, path: str, *, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """A regular file of the workspace, streamed; never through a symlink (E2B's read
        would follow one). Each directory on the way is checked once per sandbox."""
        parts = PurePosixPath(path).parts
        if not path or path.startswith("/") or ".." in parts or "\x00" in path:
            raise SandboxError(f"not a workspace path: {path!r}")
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        current = WORK_DIR
        for index, part in enumerate(parts):
            current = f"{current}/{part}"
            last = index == len(parts) - 1
            if not last and current in self._checked_dirs:
                continue
            try:
                info = await self.sdk.files.get_info(current)
            except Exception as exc:
                raise SandboxError(f"cannot read {path}: {_redacted(exc)}") from None
            if info.symlink_target:
                raise SandboxError(f"{path} goes through a symlink")
            if not last:
                self._checked_dirs.add(current)
        try:
            stream = await self.sdk.files.read(current, format="stream")
        except Exception as exc:
            raise SandboxError(f"cannot read {path}: {_redacted(exc)}") from None
        buffer = bytearray()
        try:
            async for piece in stream:
                buffer += piece
                while len(buffer) >= chunk_size:
                    yield bytes(buffer[:chunk_size])
                    del buffer[:chunk_size]
            if buffer:
                yield bytes(buffer)
        finally:  # also when the reader stops early: the SDK has no GC safety net
            close = getattr(stream, "aclose", None)
            if close is not None:
                with swallowed(log, "closing an E2B file stream", describe=_redacted):
                    await close()


class E2BSandboxProvider:
    """Creates E2B sandboxes; kills those a dead server left running."""

    name = "e2b"

    def __init__(
        self,
        api_key: str,
        *,
        template: str | None = None,
        sandbox_timeout: int = 3600,
        max_line_bytes: int = 64 * 1024,
        kill_grace: float = 5.0,
    ) -> None:
        self._api_key = api_key.strip()  # a key file's newline would end up in headers
        self.template = template
        self.sandbox_timeout = sandbox_timeout
        self.max_line_bytes = max_line_bytes
        self.kill_grace = kill_grace

    def __repr__(self) -> str:  # the key stays out of reprs and logs
        return f"E2BSandboxProvider(template={self.template!r})"

    async def create(
        self,
        build_id: str,
        *,
        workspace: Path | None,
        files: Mapping[str, str],
        env: Mapping[str, str],
    ) -> E2BSandbox:
        """Stage the workspace locally with the local rules, create the VM, upload the
        staged tree as one archive and unpack it into ``/home/user/work``."""
        from e2b_code_interpreter import AsyncSandbox

        _check_env(env, "build env")
        archive = await asyncio.to_thread(_stage, build_id, workspace, dict(files))
        try:
            sdk = await AsyncSandbox.create(
                template=self.template,
                api_key=self._api_key,
                timeout=self.sandbox_timeout,
                metadata={"agentbuild_build": build_id},
                # the preview is reached through the proxy only (Jupyter auth, owner, CSP):
                # E2B's public URL answers only requests bearing the traffic token
                network={"allow_public_traffic": False},
            )
        except Exception as exc:
            raise SandboxError(f"E2B could not create a sandbox: {self._safe(exc)}") from None
        base_env = {"CI": "true", **env}
        sandbox = E2BSandbox(
            sdk,
            build_id=build_id,
            base_env=base_env,
            max_line_bytes=self.max_line_bytes,
            kill_grace=self.kill_grace,
            keep_alive=self.sandbox_timeout,
        )
        try:
            await sdk.files.write(f"{_HOME}/{_ARCHIVE}", archive)
            unpack = f"mkdir -p work && tar -xzf {_ARCHIVE} -C work && rm -f {_ARCHIVE}"
            await sdk.commands.run(unpack, cwd=_HOME, timeout=600)
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
            await AsyncSandbox.kill(vm, api_key=self._api_key)
        except Exception as exc:
            log.warning("agentbuild: killing E2B sandbox %s failed: %s", vm, self._safe(exc))
        return True

    async def remove(self, sandbox_id: str, state: Mapping[str, Any]) -> bool:
        """:meth:`reap`: the VM's files go with it."""
        return await self.reap(sandbox_id, state)

    def _safe(self, exc: BaseException) -> str:
        return _redacted(exc, self._api_key)


def _redacted(exc: BaseException, key: str = "") -> str:
    """An SDK error's text with the key (and anything shaped like one) blanked out: every
    E2B error that reaches a log or a build's error goes through here."""
    text = str(exc).replace(key, "***") if key else str(exc)
    return _KEY_SHAPE.sub("e2b_***", text)


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


__all__ = ["STEP_MARKER", "WORK_DIR", "E2BSandbox", "E2BSandboxProvider"]

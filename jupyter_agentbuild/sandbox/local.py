"""The local process sandbox: a directory per build and a process group per step.

Layout: ``{workspace_root}/{build_id}/`` is the sandbox dir (the steps' ``HOME``) and its
``work/`` the steps' working directory, holding a copy of the workspace and the inline files.

Isolation is by convention, not by the kernel: steps run as the server's user. What this
module guarantees is hygiene:

- a step sees only an allow-list of the server's environment variables (never its secrets);
- the workspace copy never brings in what a symlink outside the workspace points at, and the
  inline files cannot be written outside ``work/``;
- nothing a step starts survives it: each step runs in its own session / process group; when
  its main process exits (or on timeout / cancel) the group is killed, as are descendants
  that left the group (``setsid``) and processes carrying the build's environment marker;
- a server that died (``kill -9``) leaves a :meth:`LocalSandbox.state` behind from which a
  new server process kills the leftovers (:meth:`LocalSandboxProvider.reap`), guarded
  against pid reuse.

Escape hatch not covered: a process that both clears its environment and double-forks out
of the group before it is seen can survive (only cgroups would close that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import psutil

from . import workspace_fs
from .base import OutputSink, SandboxError, ServiceFailed, StepResult, WorkspaceEntry
from .environment import _SECRET_ENV, DEFAULT_ENV_PASSTHROUGH, MARKER_ENV, _check_env
from .lines import LineSplitter
from .pipes import _Drain, _PipeReader, _wait_exit
from .ports import _free_port, _http_status, _non_loopback_listeners, _port_open
from .processes import (
    _KILL_WAIT,
    _POLL,
    _alive,
    _escapees,
    _Group,
    _group_members,
    _killpg,
    _reap,
    _signal_pid,
)
from .workspace_copy import _copy_dir_stats, _copy_workspace, _rmtree, _write_files

log = logging.getLogger(__name__)

_BUILD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# --------------------------------------------------------------------------- sandbox


class LocalSandbox:
    """One build's directory and the process groups of its steps (and its service)."""

    def __init__(
        self,
        *,
        build_id: str,
        directory: Path,
        base_env: Mapping[str, str],
        bash: str,
        max_line_bytes: int,
        kill_grace: float,
    ) -> None:
        self.id = f"local-{build_id}"
        self.build_id = build_id
        self.dir = directory
        self.work = directory / "work"
        self._base_env = dict(base_env)
        self._bash = bash
        self._max_line_bytes = max_line_bytes
        self._kill_grace = kill_grace
        self._groups: dict[int, _Group] = {}
        self._service: _Group | None = None
        self._service_tasks: list[asyncio.Task[None]] = []
        self._service_drain = _Drain()
        self._closed = False

    # ---- Protocol

    def state(self) -> dict[str, Any]:
        """``{"pgids": [[pgid, leader_create_time], ...], "dir", "host", "build_id"}``.

        Already useful right after creation: :meth:`LocalSandboxProvider.reap` also finds
        leftovers by the build's environment marker, so storing the state once is enough;
        storing it again while a step runs adds the pid-reuse-guarded process groups.
        """
        return {
            "pgids": [[g.pgid, g.create_time] for g in self._groups.values()],
            "dir": str(self.dir),
            "host": socket.gethostname(),
            "build_id": self.build_id,
        }

    async def run_step(
        self,
        command: str,
        *,
        step: int,
        timeout: float | None,  # noqa: ASYNC109 (the Protocol's signature)
        on_output: OutputSink,
        env: Mapping[str, str] | None = None,
    ) -> StepResult:
        """Run ``command`` with bash in ``work/``; see the module docstring for the rules.

        ``on_output`` is awaited for every batch and never called concurrently (stdout
        and stderr take turns), so a slow consumer blocks the step's output.
        """
        group = self._spawn(command, env, kind="step")
        drain = _Drain()
        pumps = self._pumps(group, drain, on_output)
        exit_task = group.exit_task
        assert exit_task is not None
        cancel_task = asyncio.create_task(group.cancel_event.wait())
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        reason = "exit"
        error: BaseException | None = None
        try:
            waiting: set[asyncio.Future[Any]] = {exit_task, cancel_task, *pumps}
            while True:
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(
                    waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                if exit_task in done:
                    reason = "exit"
                    break
                if cancel_task in done:
                    reason = "cancel"
                    break
                if not done:
                    reason = "timeout"
                    break
                failed = [p for p in done if p in pumps and p.exception() is not None]
                if failed:
                    reason = "error"
                    error = failed[0].exception()
                    break
                waiting -= done  # a stream reached EOF: keep waiting for the exit
            await self._terminate(group)
            drain.start()
            results = await asyncio.gather(*pumps, return_exceptions=True)
        except BaseException:
            # The caller was cancelled (e.g. server shutdown): kill hard, right now.
            self._kill_now(group)
            drain.start()
            for pump in pumps:
                pump.cancel()
            self._forget(group, keep=True)
            raise
        finally:
            cancel_task.cancel()
        if error is None:
            error = next((r for r in results if isinstance(r, BaseException)), None)
        if error is not None:
            raise error
        code = group.proc.returncode
        if code is None:  # could not be reaped (should not happen): report it as killed
            code = -signal.SIGKILL
        return StepResult(
            exit_code=code, timed_out=reason == "timeout", cancelled=reason == "cancel"
        )

    async def cancel(self) -> None:
        """Stop the running step(s); return once their processes are gone.

        The in-flight :meth:`run_step` then returns ``StepResult(cancelled=True)`` after
        passing on what was left in the pipes. Safe to call from inside ``on_output``.
        Not sticky: a step started afterwards runs normally.
        """
        steps = [g for g in self._groups.values() if g.kind == "step"]
        for group in steps:
            group.cancel_event.set()
        for group in steps:
            await group.gone_event.wait()

    async def close(self) -> None:
        """Cancel running steps, stop the service, kill anything still alive."""
        self._closed = True
        await self.stop_service()
        await self.cancel()
        for group in list(self._groups.values()):
            await self._terminate(group)

    async def destroy(self) -> None:
        """:meth:`close`, then remove the sandbox directory."""
        await self.close()
        await asyncio.to_thread(_rmtree, self.dir)

    # ---- workspace files (artifact collection; see workspace_fs)

    def list_files(
        self, *, prune: Callable[[str], bool] | None = None
    ) -> AsyncIterator[WorkspaceEntry]:
        """Walk ``work/`` without following symlinks (see :meth:`Sandbox.list_files`)."""
        return workspace_fs.list_entries(self.work, prune)

    def read_file(self, path: str, *, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """Read a regular file of ``work/`` in chunks, never through a symlink."""
        return workspace_fs.read_chunks(self.work, path, chunk_size)

    # ---- the port primitive (lessons.md rule 7)

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
        """Start a long-running background process (e.g. a preview web server) and wait
        until it accepts TCP connections on ``127.0.0.1:port`` and, with ``ready_path``,
        until an HTTP GET of that path answers with a status below 500; return the proxy
        target, ``"http://127.0.0.1:{port}"`` (the proxy connects to nothing else).

        ``port=None`` picks a free port. Either way ``$PORT`` is set for the command. The
        service runs in its own process group (listed by :meth:`state`) and lives until
        :meth:`stop_service`, :meth:`close` or :meth:`destroy`. Its output goes to
        ``on_output`` (with back-pressure) or is discarded; a service that listens on more
        than the loopback interface gets a warning line there. Raises :class:`SandboxError`
        if the port is already taken, :class:`ServiceFailed` if the process exits or is
        not ready in time.
        """
        if self._service is not None and self._service.proc.poll() is None:
            raise SandboxError("a service is already running in this sandbox")
        await self.stop_service()
        if port is None:
            port = _free_port()
        elif await _port_open(port):
            raise SandboxError(f"port {port} is already in use on this host")
        extra = {"PORT": str(port), **(env or {})}
        group = self._spawn(command, extra, kind="service")
        sink = on_output or _discard
        drain = _Drain()
        self._service = group
        self._service_tasks = self._pumps(group, drain, sink)
        self._service_drain = drain
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_timeout
        exit_task = group.exit_task
        assert exit_task is not None
        answer: str = "no connection"
        while True:
            if await _port_open(port):
                if ready_path is None:
                    break
                status = await _http_status(port, ready_path, max(0.1, deadline - loop.time()))
                if status is not None and status < 500:
                    break
                answer = f"HTTP {status}" if status is not None else "no HTTP answer"
            if exit_task.done():
                await self.stop_service()
                raise ServiceFailed(
                    f"the service exited with status {group.proc.returncode} before "
                    f"it was ready on port {port}",
                    exit_code=group.proc.returncode,
                )
            if loop.time() >= deadline:
                await self.stop_service()
                what = f"answer GET {ready_path} below 500 ({answer})" if ready_path else "listen"
                raise ServiceFailed(
                    f"the service did not {what} on port {port} within {ready_timeout:g}s"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exit_task), 0.1)
        exposed = await asyncio.to_thread(_non_loopback_listeners, port)
        if exposed:
            await sink(
                "stderr",
                [
                    f"agentbuild: warning: the preview listens on {', '.join(exposed)}, "
                    "reachable from the network; bind 127.0.0.1 (the proxy only uses it)"
                ],
                False,
            )
        return f"http://127.0.0.1:{port}"

    def service_running(self) -> bool:
        """Is the process started by :meth:`start_service` still running?"""
        return self._service is not None and self._service.proc.poll() is None

    async def wait_service(self) -> int | None:
        """Wait until the service's main process exits; its exit status (negative: the
        signal that killed it), or None when no service was started."""
        group = self._service
        if group is None or group.exit_task is None:
            return None
        return await asyncio.shield(group.exit_task)

    async def stop_service(self) -> None:
        """Stop the service started by :meth:`start_service` (no-op if none)."""
        group, tasks = self._service, self._service_tasks
        self._service, self._service_tasks = None, []
        if group is None:
            return
        await self._terminate(group)
        self._service_drain.start()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- internals

    def _spawn(self, command: str, env: Mapping[str, str] | None, *, kind: str) -> _Group:
        if self._closed:
            raise SandboxError("the sandbox is closed")
        if not isinstance(command, str) or "\x00" in command:
            raise SandboxError("the command must be text without NUL")
        full_env = dict(self._base_env)
        if env:
            _check_env(env, "step env")
            full_env.update(env)
        try:
            proc = subprocess.Popen(
                [self._bash, "--noprofile", "--norc", "-c", "set -eo pipefail\n" + command],
                cwd=self.work,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise SandboxError(f"cannot start the step: {exc.strerror or exc}") from None
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:  # exited and reaped by someone else already
            create_time = 0.0
        group = _Group(proc=proc, create_time=create_time, kind=kind)
        group.exit_task = asyncio.create_task(_wait_exit(proc))
        self._groups[group.pgid] = group
        return group

    def _pumps(
        self, group: _Group, drain: _Drain, on_output: OutputSink
    ) -> list[asyncio.Task[None]]:
        """One :meth:`_pump` task per pipe of ``group`` (stdout, stderr), taking turns."""
        assert group.proc.stdout is not None and group.proc.stderr is not None
        lock = asyncio.Lock()
        return [
            asyncio.create_task(self._pump(pipe, drain, name, on_output, lock))
            for pipe, name in ((group.proc.stdout, "stdout"), (group.proc.stderr, "stderr"))
        ]

    async def _pump(
        self,
        pipe: IO[bytes],
        drain: _Drain,
        stream: str,
        on_output: OutputSink,
        lock: asyncio.Lock,
    ) -> None:
        """Read one pipe to its end (or the drain bound), passing batches to ``on_output``
        one at a time; the pipe is closed when this ends, however it ends."""
        try:
            reader = _PipeReader(pipe.fileno(), drain)
            splitter = LineSplitter(self._max_line_bytes)
            while True:
                data = await reader.read()
                if not data:
                    break
                for lines, continued in splitter.feed(data):
                    async with lock:
                        await on_output(stream, lines, continued)
            for lines, continued in splitter.finish():
                async with lock:
                    await on_output(stream, lines, continued)
        finally:
            pipe.close()

    def _other_pgids(self, group: _Group) -> list[int]:
        return [pgid for pgid in self._groups if pgid != group.pgid]

    async def _terminate(self, group: _Group) -> None:
        """Make sure nothing of ``group`` is left: SIGTERM, grace, SIGKILL; never hangs.

        Used for every way a step ends: after a normal exit it only finds leftovers
        (background jobs, ``setsid`` children) and usually returns at once.
        """
        if group.gone_event.is_set() and self._is_gone(group):
            return
        loop = asyncio.get_running_loop()
        sig = signal.SIGTERM
        deadline = loop.time() + self._kill_grace
        try:
            while True:
                # Look again every round: a child may leave the group (setsid) between a
                # scan and the signal; the step is over only when a scan finds nothing.
                group.escaped.update(
                    await asyncio.to_thread(
                        _escapees,
                        group.pgid,
                        build_id=self.build_id,
                        directory=str(self.dir),
                        since=group.create_time,
                        exclude_pgids=self._other_pgids(group),
                    )
                )
                if self._is_gone(group):
                    return
                if loop.time() >= deadline:
                    if sig == signal.SIGKILL:
                        log.warning("sandbox %s: process group %s did not die", self.id, group.pgid)
                        return
                    sig, deadline = signal.SIGKILL, loop.time() + _KILL_WAIT
                self._send(group, sig)
                await self._wait_gone(group, deadline - loop.time())
        finally:
            self._forget(group, keep=not self._is_gone(group))

    def _send(self, group: _Group, sig: int) -> None:
        if group.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                group.proc.send_signal(sig)
        _killpg(group.pgid, sig)
        for pid, ctime in group.escaped.items():
            _signal_pid(pid, ctime, sig)

    def _kill_now(self, group: _Group) -> None:
        """Synchronous SIGKILL of everything in ``group`` (for cancellation paths)."""
        if group.proc.returncode is None and group.create_time:
            with contextlib.suppress(psutil.Error):
                leader = psutil.Process(group.pgid)
                for child in leader.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        child.kill()
        self._send(group, signal.SIGKILL)
        with contextlib.suppress(OSError):
            group.proc.poll()

    def _is_gone(self, group: _Group) -> bool:
        if group.proc.poll() is None:
            return False
        if _group_members(group.pgid):
            return False
        return not any(_alive(pid, ct) for pid, ct in group.escaped.items())

    async def _wait_gone(self, group: _Group, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self._is_gone(group):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_POLL)
        return True

    def _forget(self, group: _Group, *, keep: bool = False) -> None:
        """Termination is over: wake :meth:`cancel`; drop the group from :meth:`state`
        unless something of it survived (``keep``: a later close/reap tries again)."""
        if not keep:
            self._groups.pop(group.pgid, None)
        group.gone_event.set()


async def _discard(stream: str, lines: list[str], continued: bool) -> None:
    return None


# --------------------------------------------------------------------------- provider


class LocalSandboxProvider:
    """Creates :class:`LocalSandbox` directories under ``workspace_root``."""

    name = "local"

    def __init__(
        self,
        workspace_root: Path,
        *,
        max_line_bytes: int = 1_048_576,
        kill_grace: float = 5.0,
        env_passthrough: Sequence[str] = DEFAULT_ENV_PASSTHROUGH,
    ) -> None:
        if max_line_bytes < 4:
            raise ValueError("max_line_bytes must be at least 4")
        # absolute and resolved: the dir is compared with processes' cwd and HOME
        self.workspace_root = Path(workspace_root).expanduser().resolve()
        self.max_line_bytes = max_line_bytes
        self.kill_grace = kill_grace
        self.env_passthrough = tuple(env_passthrough)
        self._bash = shutil.which("bash") or "/bin/bash"

    def base_env(self, build_id: str, sandbox_dir: Path) -> dict[str, str]:
        """The environment every step starts from (before the build's own ``env``)."""
        env = {
            key: os.environ[key]
            for key in self.env_passthrough
            if key in os.environ and not _SECRET_ENV.match(key)
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
    ) -> LocalSandbox:
        if not isinstance(build_id, str) or not _BUILD_ID.match(build_id):
            raise SandboxError("invalid build id for a local sandbox")
        _check_env(env, "build env")
        directory = self.workspace_root / build_id
        job = asyncio.ensure_future(
            asyncio.to_thread(self._prepare, directory, workspace, dict(files))
        )
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            # the copy goes on in its thread: remove what it made once it is done
            job.add_done_callback(
                lambda _: threading.Thread(target=_rmtree, args=(directory,), daemon=True).start()
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
        )

    def _prepare(self, directory: Path, workspace: Path | None, files: dict[str, str]) -> None:
        try:
            self.workspace_root.mkdir(mode=0o700, parents=True, exist_ok=True)
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
            if workspace is not None:
                try:
                    skipped = _copy_workspace(workspace, work, [str(self.workspace_root)])
                except OSError as exc:
                    where = (
                        os.path.relpath(exc.filename, os.path.realpath(workspace))
                        if isinstance(exc.filename, str)
                        else ""
                    )
                    raise SandboxError(
                        f"cannot copy the workspace ({where}): {exc.strerror}"
                    ) from None
                if skipped:
                    log.info(
                        "sandbox %s: skipped %d symlink(s)/special file(s) pointing outside "
                        "the workspace: %s",
                        directory.name,
                        len(skipped),
                        ", ".join(skipped[:10]),
                    )
            _write_files(work, files)
            if workspace is not None:
                _copy_dir_stats(workspace, work)
        except BaseException:
            _rmtree(directory)
            raise

    async def reap(self, sandbox_id: str, state: Mapping[str, Any]) -> None:
        """Kill what a dead server left of this sandbox; never raises for dead processes.

        Only on the host that recorded ``state``. For each recorded process group: if its
        leader still has the recorded create time, every member is killed; otherwise (the
        leader is gone, its pid maybe reused) only members whose cwd is inside the
        recorded sandbox dir. Also killed: processes carrying this build's environment
        marker whose ``HOME`` is the sandbox dir or whose cwd is inside it (``setsid``
        children, jobs of groups that were never recorded).
        """
        try:
            await asyncio.to_thread(_reap, sandbox_id, dict(state))
        except Exception:  # reaping is best effort: log, never fail start-up
            log.exception("sandbox %s: reaping failed", sandbox_id)

    async def remove(self, sandbox_id: str, state: Mapping[str, Any]) -> None:
        """:meth:`reap`, then delete the sandbox dir recorded in ``state`` (for a build
        deleted after the server that ran it died). Only a dir directly under this
        provider's ``workspace_root`` is removed."""
        await self.reap(sandbox_id, state)
        directory = state.get("dir")
        if state.get("host") != socket.gethostname() or not isinstance(directory, str):
            return
        path = Path(directory)
        if path.parent == self.workspace_root and _BUILD_ID.match(path.name):
            await asyncio.to_thread(_rmtree, path)


__all__ = [
    "DEFAULT_ENV_PASSTHROUGH",
    "MARKER_ENV",
    "LocalSandbox",
    "LocalSandboxProvider",
]

"""The local process sandbox: a directory per build and a process group per step.

Isolation is by convention, not by the kernel: steps run as the server's user. This module
runs a build's steps and its preview process in the sandbox dir's ``work/`` and passes their output
on one batch at a time (a slow consumer holds the process back). What the local sandbox
guarantees is hygiene, kept where it is enforced:

- :mod:`.local_provider`: the layout, a step's environment (an allow-list, never the
  server's secrets), the confined workspace copy, reaping what a dead server left behind;
- :mod:`.groups`: nothing a step (or the preview process) starts survives it;
- :mod:`.workspace_fs`: files are read from ``work/`` without following symlinks.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import IO, Any

from ..vocabulary import Stream
from . import workspace_fs
from .base import (
    OutputSink,
    SandboxError,
    StepResult,
    WorkspaceEntry,
    discard_output,
)
from .groups import ProcessGroups, StepGroups
from .pipes import DrainMode, PipeReader
from .ports import free_port, http_status, non_loopback_listeners, port_open
from .processes import LiveGroup
from .readiness import wait_until_ready
from .relay import OutputRelay
from .workspace_copy import delete_tree


class LocalSandbox:
    """One build's directory and the process groups of its steps (and its preview process)."""

    def __init__(
        self,
        *,
        build_id: str,
        directory: Path,
        base_env: Mapping[str, str],
        bash: str,
        max_line_bytes: int,
        kill_grace: float,
        groups: StepGroups | None = None,
    ) -> None:
        self.id = f"local-{build_id}"
        self.build_id = build_id
        self.dir = directory
        self.work = directory / "work"
        self._max_line_bytes = max_line_bytes
        #: How steps are started and stopped: plain process groups, or (the isolated
        #: provider) one set of Linux namespaces per step (:mod:`.namespaces`).
        self._groups: StepGroups = groups or ProcessGroups(
            sandbox_id=self.id,
            build_id=build_id,
            directory=directory,
            base_env=base_env,
            bash=bash,
            kill_grace=kill_grace,
        )
        self._preview: LiveGroup | None = None
        self._preview_tasks: list[asyncio.Task[None]] = []
        self._preview_drain = DrainMode()

    @property
    def isolated(self) -> bool:
        """Do its steps run in Linux namespaces (else as plain process groups)?"""
        return not isinstance(self._groups, ProcessGroups)

    # ---- Protocol

    def state(self) -> dict[str, Any]:
        """``{"pgids": [[pgid, leader_create_time], ...], "dir", "host", "build_id"}``.

        Already useful right after creation: :meth:`LocalSandboxProvider.reap` also finds
        leftovers by the build's environment marker, so storing the state once is enough;
        storing it again while a step runs adds the pid-reuse-guarded process groups.
        """
        return {
            "pgids": self._groups.pgids(),
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
        group = self._groups.spawn(command, env, kind="step")
        drain = DrainMode()
        pumps = self._pumps(group, drain, on_output)
        try:
            reason, error = await self._step_end(group, pumps, timeout)
            await self._groups.stop(group)
            drain.start()
            results = await asyncio.gather(*pumps, return_exceptions=True)
        except BaseException:
            # The caller was cancelled (e.g. server shutdown): kill hard, right now.
            self._groups.kill(group)
            drain.start()
            for pump in pumps:
                pump.cancel()
            self._groups.unlist(group, keep=True)
            raise
        if error is None:
            error = next((r for r in results if isinstance(r, BaseException)), None)
        if error is not None:
            raise error
        code = self._groups.exit_code(group)
        if code is None:  # could not be reaped (should not happen): report it as killed
            code = -signal.SIGKILL
        return StepResult(
            exit_code=code, timed_out=reason == "timeout", cancelled=reason == "cancel"
        )

    async def _step_end(
        self,
        group: LiveGroup,
        pumps: list[asyncio.Task[None]],
        timeout: float | None,  # noqa: ASYNC109 (the step's, counted from its start)
    ) -> tuple[str, BaseException | None]:
        """Wait for what ends a step: its exit, a cancel, its timeout, or a failing output
        sink (with what it raised). A stream's EOF alone does not end it."""
        exit_task = group.exit_task
        assert exit_task is not None
        cancel_task = asyncio.create_task(group.cancel_event.wait())
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        waiting: set[asyncio.Future[Any]] = {exit_task, cancel_task, *pumps}
        try:
            while True:
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(
                    waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                if exit_task in done:
                    return "exit", None
                if cancel_task in done:
                    return "cancel", None
                if not done:
                    return "timeout", None
                failed = [p for p in done if p in pumps and p.exception() is not None]
                if failed:
                    return "error", failed[0].exception()
                waiting -= done  # a stream reached EOF: keep waiting for the exit
        finally:
            cancel_task.cancel()

    async def cancel(self) -> None:
        """Stop the running step(s); return once their processes are gone.

        The in-flight :meth:`run_step` then returns ``StepResult(cancelled=True)`` after
        passing on what was left in the pipes. Safe to call from inside ``on_output``.
        Not sticky: a step started afterwards runs normally.
        """
        steps = self._groups.listed("step")
        for group in steps:
            group.cancel_event.set()
        for group in steps:
            await group.gone_event.wait()

    async def close(self) -> None:
        """Cancel running steps, stop the preview process, kill anything still alive."""
        self._groups.closed = True
        await self.stop_preview_process()
        await self.cancel()
        for group in self._groups.listed():
            await self._groups.stop(group)

    async def destroy(self) -> None:
        """:meth:`close`, then remove the sandbox directory."""
        await self.close()
        await asyncio.to_thread(delete_tree, self.dir)

    # ---- workspace files (artifact collection; see workspace_fs)

    def list_files(
        self, *, prune: Callable[[str], bool] | None = None
    ) -> AsyncIterator[WorkspaceEntry]:
        """Walk ``work/`` without following symlinks (see :meth:`Sandbox.list_files`)."""
        return workspace_fs.list_entries(self.work, prune)

    def read_file(self, path: str, *, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """Read a regular file of ``work/`` in chunks, never through a symlink."""
        return workspace_fs.read_chunks(self.work, path, chunk_size)

    # ---- the port primitive: the only way a preview reaches the proxy

    async def start_preview_process(
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
        process runs in its own process group (listed by :meth:`state`) and lives until
        :meth:`stop_preview_process`, :meth:`close` or :meth:`destroy`. Its output goes to
        ``on_output`` (with back-pressure) or is discarded; a process that listens on more
        than the loopback interface gets a warning line there. Raises :class:`SandboxError`
        if the port is already taken, :class:`PreviewFailed` if the process exits or is
        not ready in time.
        """
        if self._preview is not None and self._preview.proc.poll() is None:
            raise SandboxError("a preview process is already running in this sandbox")
        await self.stop_preview_process()
        if port is None:
            port = free_port()
        elif await port_open(port):
            raise SandboxError(f"port {port} is already in use on this host")
        extra = {"PORT": str(port), **(env or {})}
        group = self._groups.spawn(command, extra, kind="preview")
        sink = on_output or discard_output
        self._preview = group
        self._preview_drain = DrainMode()
        self._preview_tasks = self._pumps(group, self._preview_drain, sink)
        assert group.exit_task is not None
        what = f"answer GET {ready_path} below 500" if ready_path else "listen"
        await wait_until_ready(
            lambda seconds: _probe(port, ready_path, seconds),
            group.exit_task,
            exit_code=lambda: self._groups.exit_code(group),
            stop=self.stop_preview_process,
            port=port,
            timeout=ready_timeout,
            interval=0.1,
            not_ready=lambda answer: (
                f"the preview process did not {what}"
                + (f" ({answer})" if ready_path else "")
                + f" on port {port} within {ready_timeout:g}s"
            ),
        )
        await _warn_if_exposed(port, sink)
        return f"http://127.0.0.1:{port}"

    def preview_headers(self) -> dict[str, str]:
        """None needed: the target is this host's loopback."""
        return {}

    def preview_running(self) -> bool:
        """Is the process started by :meth:`start_preview_process` still running?"""
        return self._preview is not None and self._preview.proc.poll() is None

    async def wait_preview_process(self) -> int | None:
        """Wait until the preview's main process exits; its exit status (negative: the
        signal that killed it), or None when none was started."""
        group = self._preview
        if group is None or group.exit_task is None:
            return None
        await asyncio.shield(group.exit_task)
        return self._groups.exit_code(group)

    async def stop_preview_process(self) -> None:
        """Stop the service started by :meth:`start_preview_process` (no-op if none)."""
        group, tasks = self._preview, self._preview_tasks
        self._preview, self._preview_tasks = None, []
        if group is None:
            return
        await self._groups.stop(group)
        self._preview_drain.start()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- internals

    def _pumps(
        self, group: LiveGroup, drain: DrainMode, on_output: OutputSink
    ) -> list[asyncio.Task[None]]:
        """One :meth:`_pump` task per pipe of ``group`` (stdout, stderr), taking turns."""
        assert group.proc.stdout is not None and group.proc.stderr is not None
        relay = OutputRelay(self._max_line_bytes, on_output)
        return [
            asyncio.create_task(self._pump(pipe, drain, stream, relay))
            for pipe, stream in (
                (group.proc.stdout, Stream.STDOUT),
                (group.proc.stderr, Stream.STDERR),
            )
        ]

    async def _pump(
        self, pipe: IO[bytes], drain: DrainMode, stream: Stream, relay: OutputRelay
    ) -> None:
        """Read one pipe to its end (or the drain bound), passing its lines on; the pipe
        is closed when this ends, however it ends."""
        try:
            reader = PipeReader(pipe.fileno(), drain)
            while data := await reader.read():
                await relay.feed(stream, data)
            await relay.finish(stream)
        finally:
            pipe.close()


async def _warn_if_exposed(port: int, sink: OutputSink) -> None:
    """A warning line on stderr when the preview listens on more than loopback."""
    exposed = await asyncio.to_thread(non_loopback_listeners, port)
    if exposed:
        await sink(
            Stream.STDERR,
            [
                f"agentbuild: warning: the preview listens on {', '.join(exposed)}, "
                "reachable from the network; bind 127.0.0.1 (the proxy only uses it)"
            ],
            False,
        )


async def _probe(port: int, ready_path: str | None, seconds: float) -> str | None:
    """None when the preview is ready: it accepts connections and, with ``ready_path``,
    answers GET of it below 500; else what it answered."""
    if not await port_open(port):
        return "no connection"
    if ready_path is None:
        return None
    status = await http_status(port, ready_path, seconds)
    if status is not None and status < 500:
        return None
    return f"HTTP {status}" if status is not None else "no HTTP answer"


__all__ = ["LocalSandbox"]

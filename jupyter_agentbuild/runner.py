"""The build runner: one asyncio task per build, driving the state machine.

``queued -> starting -> running -> succeeded | failed | cancelled | timed_out | interrupted``

The runner is the only writer of a build's status and entry stream while it runs
the build. Every field is written at the moment it becomes true (lessons rule 2),
the final flush completes before the terminal status, and the terminal status
is the last entry (rule 3). The store stays the source of truth (rule 4): live
state here is only a cache and a wake-up signal for readers in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from .entries import ACTIVE, TERMINAL, encode_event, iso, utcnow
from .logpipe import LogPipe, StoreUnavailable
from .retry import every, with_backoff
from .sandbox.base import Sandbox, SandboxProvider, StepResult
from .spec import BuildSpec
from .store.repository import BuildRow, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerConfig:
    default_timeout: float = 3600.0
    max_concurrent_builds: int = 4
    log_flush_interval: float = 0.25
    log_chunk_size: int = 1000
    max_log_buffer: int = 100_000
    store_retry_timeout: float = 60.0
    heartbeat_interval: float = 5.0
    stale_after: float = 30.0
    shutdown_timeout: float = 15.0


@dataclass
class AfterSteps:
    """What a :class:`BuildHook` sees once the steps have ended (successfully or not).

    Hooks run in registration order, before the sandbox is destroyed and before the
    terminal status, so whatever they emit (``artifacts_ready``, ``preview_ready``)
    precedes the terminal status entry. A hook that wants the sandbox to outlive the
    build (a preview) calls :meth:`keep_sandbox` and becomes responsible for it.
    """

    build_id: str
    owner: str
    spec: BuildSpec
    sandbox: Sandbox
    pipe: LogPipe
    store: Store
    succeeded: bool
    sandbox_kept: bool = False
    #: Set when the build is asked to stop (cancel, timeout, server shutdown): a hook that
    #: waits for something (a preview getting ready) gives up when it is set.
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def keep_sandbox(self) -> None:
        self.sandbox_kept = True


class BuildHook(Protocol):
    """Work that follows the steps of a build (artifact collection, previews)."""

    async def after_steps(self, ctx: AfterSteps) -> None: ...


@dataclass
class _Job:
    """What the runner keeps in memory for one build it runs."""

    row: BuildRow
    spec: BuildSpec
    workspace: Path | None
    pipe: LogPipe
    task: asyncio.Task[None] | None = None
    sandbox: Sandbox | None = None
    stop_reason: str | None = None  # cancelled | timed_out | interrupted
    stop_message: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    step_started: bool = False
    sandbox_kept: bool = False
    last_exit_code: int | None = None
    #: The ``sandbox_state`` last written: unchanged state is not written again.
    recorded_state: Any = None


class BuildStopped(Exception):
    """Raised inside a build task when cancel, timeout or shutdown stops it."""


class Runner:
    """Runs builds in this server process and reconciles those of dead processes."""

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, SandboxProvider],
        config: RunnerConfig,
        *,
        on_activity: Callable[[], None] | None = None,
        hooks: list[BuildHook] | None = None,
    ) -> None:
        self.store = store
        self.hooks: list[BuildHook] = list(hooks or [])
        self.providers = providers
        self.config = config
        self.on_activity = on_activity or (lambda: None)
        self.runner_id = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._jobs: dict[str, _Job] = {}
        self._slot_freed = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False

    # -- public API ------------------------------------------------------------

    def runner_fields(self) -> dict[str, Any]:
        return {"runner_id": self.runner_id, "runner_host": self.host, "runner_pid": self.pid}

    async def start(self) -> None:
        """Reconcile builds left behind by dead processes, then start the heartbeat."""
        await self.reconcile()
        task = asyncio.create_task(
            every(self.config.heartbeat_interval, self._heartbeat, "heartbeat"),
            name="agentbuild-heartbeat",
        )
        self._background.add(task)

    def pipe(self, build_id: str) -> LogPipe | None:
        job = self._jobs.get(build_id)
        return job.pipe if job else None

    def submit(self, row: BuildRow, spec: BuildSpec, workspace: Path | None) -> None:
        """Take a freshly inserted ``queued`` build and run it in a task of its own."""
        if self._closing:
            raise RuntimeError("the runner is shutting down")
        pipe = LogPipe(
            row.id,
            self.store.append_chunks,
            last_seq=row.last_seq,
            flush_interval=self.config.log_flush_interval,
            chunk_size=self.config.log_chunk_size,
            max_pending=self.config.max_log_buffer,
            retry_timeout=self.config.store_retry_timeout,
            secrets=spec.secret_values,
        )
        pipe.start()
        job = _Job(row=row, spec=spec, workspace=workspace, pipe=pipe)
        self._jobs[row.id] = job
        job.task = asyncio.create_task(self._run(job), name=f"build-{row.id}")
        self.on_activity()

    async def cancel(self, build_id: str, reason: str = "cancelled", message: str = "") -> bool:
        """Stop a build running here; returns False when it does not run in this process."""
        job = self._jobs.get(build_id)
        if job is None:
            return False
        self._stop(job, reason, message or "cancelled by request")
        return True

    async def wait(self, build_id: str) -> None:
        job = self._jobs.get(build_id)
        if job is not None and job.task is not None:
            await asyncio.shield(job.task)

    async def shutdown(self) -> None:
        """Stop every build (``interrupted``), flushing what was accepted, within a bound."""
        self._closing = True
        for task in self._background:
            task.cancel()
        jobs = list(self._jobs.values())
        for job in jobs:
            self._stop(job, "interrupted", "the Jupyter server stopped while the build ran")
        tasks = [job.task for job in jobs if job.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.config.shutdown_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)

    # -- the build task --------------------------------------------------------

    def _stop(self, job: _Job, reason: str, message: str) -> None:
        if job.stop_reason is None:
            job.stop_reason = reason
            job.stop_message = message
        job.wake.set()

    async def _run(self, job: _Job) -> None:
        row, spec, pipe = job.row, job.spec, job.pipe
        status, exit_code, error = "failed", None, None
        deadline_handle: asyncio.TimerHandle | None = None
        try:
            await pipe.event("status", {"status": "queued"})
            await self._claim_slot(job)
            await pipe.event("status", {"status": "starting"})
            timeout = spec.timeout or self.config.default_timeout
            deadline_handle = asyncio.get_running_loop().call_later(
                timeout,
                self._stop,
                job,
                "timed_out",
                f"the build exceeded its timeout of {timeout:g}s",
            )
            provider = self.providers[row.provider]
            job.sandbox = await provider.create(
                row.id, workspace=job.workspace, files=spec.files, env=spec.env
            )
            self._check_stopped(job)
            started = utcnow()
            job.recorded_state = job.sandbox.state()
            sandbox = job.sandbox
            await with_backoff(
                lambda: self.store.update_build(
                    row.id,
                    status="running",
                    sandbox_id=sandbox.id,
                    sandbox_state=job.recorded_state,
                    started_at=started,
                ),
                patience=self.config.store_retry_timeout,
            )
            await pipe.event("status", {"status": "running", "sandbox_id": job.sandbox.id})
            exit_code = await self._run_steps(job)
            self._check_stopped(job)
            await self._after_steps(job, succeeded=exit_code == 0)
            self._check_stopped(job)
            status = "succeeded" if exit_code == 0 else "failed"
            if exit_code != 0:
                error = f"step failed with exit code {exit_code}"
        except BuildStopped:
            status = job.stop_reason or "cancelled"
            error = job.stop_message
            exit_code = job.last_exit_code
        except StoreUnavailable as exc:
            status, error = "failed", f"the build database stopped accepting logs: {exc}"
            log.error("agentbuild: build %s failed: %s", row.id, error)
        except asyncio.CancelledError:
            status, error = "interrupted", "the Jupyter server stopped while the build ran"
        except Exception as exc:  # a provider or store failure, not a failing step
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("agentbuild: build %s failed to run", row.id)
        finally:
            if deadline_handle is not None:
                deadline_handle.cancel()
            await self._finish(job, status, exit_code, error)

    async def _run_steps(self, job: _Job) -> int:
        assert job.sandbox is not None
        pipe = job.pipe
        for index, step in enumerate(job.spec.steps):
            self._check_stopped(job)
            await pipe.event(
                "step_started", {"step": index, "name": step.name or f"step {index + 1}"}
            )
            began = time.monotonic()
            job.step_started = False

            async def on_output(
                stream: str, lines: list[str], continued: bool, i: int = index
            ) -> None:
                if not job.step_started:
                    job.step_started = True
                    await self._record_sandbox_state(job)
                await pipe.log(stream, i, lines, continued)

            result = await self._run_step(job, step.run, index, step.timeout, on_output)
            if result.timed_out and job.stop_reason is None:
                job.stop_reason = "timed_out"
                job.stop_message = f"step {index + 1} exceeded its timeout of {step.timeout:g}s"
            await pipe.event(
                "step_finished",
                {
                    "step": index,
                    "exit_code": result.exit_code,
                    "duration": round(time.monotonic() - began, 3),
                },
            )
            self._check_stopped(job, exit_code=result.exit_code)
            if result.exit_code != 0:
                return result.exit_code
        return 0

    async def _run_step(
        self, job: _Job, command: str, index: int, step_timeout: float | None, on_output: Any
    ) -> StepResult:
        """Run one step; on a stop request, cancel it until it is really gone.

        Cancelling is repeated because a stop can land before the step's process
        exists, when a single cancel would find nothing to kill.
        """
        assert job.sandbox is not None
        step_task = asyncio.create_task(
            job.sandbox.run_step(command, step=index, timeout=step_timeout, on_output=on_output)
        )
        while not step_task.done():
            waker = asyncio.create_task(job.wake.wait())
            try:
                await asyncio.wait([step_task, waker], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waker.cancel()
            if step_task.done():
                break
            await job.sandbox.cancel()
            await asyncio.wait([step_task], timeout=0.5)
        return step_task.result()

    async def _after_steps(self, job: _Job, *, succeeded: bool) -> None:
        assert job.sandbox is not None
        ctx = AfterSteps(
            build_id=job.row.id,
            owner=job.row.owner,
            spec=job.spec,
            sandbox=job.sandbox,
            pipe=job.pipe,
            store=self.store,
            succeeded=succeeded,
            stop=job.wake,
        )
        for hook in self.hooks:
            await hook.after_steps(ctx)
        job.sandbox_kept = ctx.sandbox_kept

    async def _record_sandbox_state(self, job: _Job) -> None:
        """Record process groups as soon as a step runs, so a successor can reap them
        (and on heartbeats, when they changed: an unchanged state is not written again)."""
        if job.sandbox is None:
            return
        state = job.sandbox.state()
        if state == job.recorded_state:
            return
        with contextlib.suppress(Exception):
            await self.store.update_build(job.row.id, sandbox_state=state)
            job.recorded_state = state

    def _check_stopped(self, job: _Job, exit_code: int | None = None) -> None:
        if job.stop_reason is not None:
            if exit_code is not None:
                job.last_exit_code = exit_code
            raise BuildStopped(job.stop_message or job.stop_reason)

    async def _claim_slot(self, job: _Job) -> None:
        """Wait in ``queued`` while the owner already runs ``max_concurrent_builds``, then
        claim the build (``queued -> starting``). Count and claim are one step in the
        database, under a per-owner lock: neither two builds of this server nor two servers
        sharing the database can both take the last slot."""
        while True:
            self._check_stopped(job)
            # retried while the database restarts (else the build would fail on it)
            claimed = await with_backoff(
                lambda: self.store.claim_slot(
                    job.row.id,
                    owner=job.row.owner,
                    limit=self.config.max_concurrent_builds,
                    busy_statuses=["starting", "running"],
                    to_status="starting",
                    **self.runner_fields(),
                ),
                patience=self.config.store_retry_timeout,
            )
            if claimed is None:
                self._check_stopped(job)
                raise BuildStopped("the build left the queue elsewhere")
            if claimed:
                return
            waiters = [
                asyncio.create_task(self._slot_freed.wait()),
                asyncio.create_task(job.wake.wait()),
            ]
            try:
                # Other servers free slots too: re-check now and then.
                await asyncio.wait(
                    waiters,
                    timeout=self.config.heartbeat_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def _finish(
        self, job: _Job, status: str, exit_code: int | None, error: str | None
    ) -> None:
        """Final flush, terminal status entry, then the terminal row: in that order."""
        row, pipe = job.row, job.pipe
        try:
            if job.sandbox is not None and not job.sandbox_kept:
                with contextlib.suppress(Exception):
                    await job.sandbox.destroy()
            with contextlib.suppress(StoreUnavailable):
                await pipe.flush()
            data: dict[str, Any] = {"status": status, "exit_code": exit_code}
            if error:
                data["error"] = error
            await pipe.event("status", data)
            try:
                await pipe.flush()
            except StoreUnavailable:
                log.error(
                    "agentbuild: %d log entries of build %s could not be stored",
                    pipe.last_seq - pipe.stored_seq,
                    row.id,
                )
            # The row turns terminal only after its last entry is stored, and readers
            # see the stream end only after that (close wakes them for the last time).
            # A kept sandbox (a preview) stays recorded in the same write, so a server
            # dying right after it still leaves what a reaper needs.
            kept = job.sandbox.state() if job.sandbox is not None and job.sandbox_kept else None
            await self._write_terminal(row.id, status, exit_code, error, kept)
            with contextlib.suppress(StoreUnavailable):
                await pipe.close()
        finally:
            self._jobs.pop(row.id, None)
            freed, self._slot_freed = self._slot_freed, asyncio.Event()
            freed.set()
            self.on_activity()

    async def _write_terminal(
        self,
        build_id: str,
        status: str,
        exit_code: int | None,
        error: str | None,
        sandbox_state: dict[str, Any] | None = None,
    ) -> None:
        try:
            await with_backoff(
                lambda: self.store.update_build(
                    build_id,
                    status=status,
                    exit_code=exit_code,
                    error=error,
                    finished_at=utcnow(),
                    sandbox_state=sandbox_state,
                ),
                patience=self.config.store_retry_timeout,
            )
        except Exception:
            log.exception("agentbuild: could not record the end of build %s", build_id)

    # -- heartbeat and reconciliation -----------------------------------------

    async def _heartbeat(self) -> None:
        """One beat: our builds are alive, their sandboxes recorded, remote cancels
        applied; then dead servers' builds are reconciled."""
        if self._jobs:
            self.on_activity()
            await self.store.heartbeat(self.runner_id, utcnow())
            for job in list(self._jobs.values()):
                await self._record_sandbox_state(job)
            await self._apply_remote_cancels()
        await self.reconcile()

    async def _apply_remote_cancels(self) -> None:
        """Another server may have asked to cancel one of our builds (through the store)."""
        for build_id in await self.store.cancel_requests(self.runner_id):
            job = self._jobs.get(build_id)
            if job is not None:
                self._stop(job, "cancelled", "cancelled by request")

    def _is_dead(self, row: BuildRow, now: float) -> bool:
        if row.id in self._jobs:
            return False
        if row.runner_id == self.runner_id:
            return True  # ours, but no task: it can never finish
        if row.runner_host == self.host and row.runner_pid is not None:
            if row.runner_pid == self.pid or not pid_alive(row.runner_pid):
                return True
            if _started_before(row.runner_pid, row.created_at.timestamp()):
                # The very server that took the build is running (its process is older
                # than the build, so the pid was not reused): alive, however late its
                # heartbeat under load. Reaping it would kill a live build's processes.
                return False
        beat = row.heartbeat_at or row.created_at
        return now - beat.timestamp() > self.config.stale_after

    async def reconcile(self) -> None:
        """Mark builds whose server died ``interrupted`` and reap their sandboxes."""
        now = time.time()
        for row in await self.store.active_builds(ACTIVE):
            if not self._is_dead(row, now):
                continue
            # A sandbox that cannot be reaped from here (another host) stays recorded:
            # the next server starting there reaps it (PreviewManager.start).
            keep = None
            if row.sandbox_id and row.sandbox_state and row.provider in self.providers:
                try:
                    provider = self.providers[row.provider]
                    if not await provider.reap(row.sandbox_id, row.sandbox_state):
                        keep = row.sandbox_state
                except Exception as exc:
                    log.warning("agentbuild: reaping %s failed: %s", row.sandbox_id, exc)
            message = "the server running this build stopped before it finished"
            now_utc = utcnow()
            data = {"status": "interrupted", "exit_code": None, "error": message}
            seq = row.last_seq + 1
            if await self.store.end_with_entry(
                row.id,
                (seq, encode_event(seq, iso(now_utc) or "", "status", data)),
                from_statuses=list(ACTIVE),
                to_status="interrupted",
                error=message,
                finished_at=now_utc,
                sandbox_state=keep,
            ):
                log.info("agentbuild: build %s marked interrupted (its server died)", row.id)


def _started_before(pid: int, when: float) -> bool:
    """Did the process ``pid`` start before ``when`` (a POSIX time)? False if unknown."""
    try:
        return bool(psutil.Process(pid).create_time() <= when)
    except psutil.Error:
        return False


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (any owner)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        pass
    return True


__all__ = ["Runner", "RunnerConfig", "TERMINAL"]

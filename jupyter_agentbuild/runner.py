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
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import resume
from .entries import ACTIVE, TERMINAL, encode_event, iso, utcnow
from .liveness import server_dead
from .logpipe import LogPipe, StoreUnavailable
from .retry import every, with_backoff
from .sandbox.base import Sandbox, SandboxProvider, StepResult
from .spec import BuildSpec
from .store.repository import BuildRow, Store
from .swallow import swallowed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerConfig:
    default_timeout: float = 3600.0
    max_concurrent_builds: int = 4
    log_flush_interval: float = 0.25
    log_chunk_size: int = 1000
    max_log_buffer: int = 100_000
    #: Bytes of entries held in memory per build before the sandbox reader is paused.
    max_log_buffer_bytes: int = 64 * 2**20
    #: Bytes of log text one build may store; beyond it output is dropped (None: no cap).
    max_log_bytes: int | None = 256 * 2**20
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
    #: True while its steps run: a graceful stop may then leave it to the next server.
    detachable: bool = False
    #: The ``sandbox_state`` last written: unchanged state is not written again.
    recorded_state: Any = None
    #: Stops the build at its timeout (cancelled when the build ends).
    deadline: asyncio.TimerHandle | None = None


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
        #: Sandboxes whose destroy failed, by build id: ``(provider, sandbox_id, state)``.
        #: Their state stays recorded in the store, and each heartbeat tries again.
        self._leftovers: dict[str, tuple[str, str, dict[str, Any]]] = {}

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
        pipe = self._new_pipe(row, spec.secret_values)
        job = _Job(row=row, spec=spec, workspace=workspace, pipe=pipe)
        self._jobs[row.id] = job
        job.task = asyncio.create_task(self._run(job), name=f"build-{row.id}")
        log.info("agentbuild: build %s of %s queued (%s)", row.id, row.owner, row.provider)
        self.on_activity()

    def _new_pipe(self, row: BuildRow, secrets: list[str]) -> LogPipe:
        pipe = LogPipe(
            row.id,
            self.store.append_chunks,
            last_seq=row.last_seq,
            flush_interval=self.config.log_flush_interval,
            chunk_size=self.config.log_chunk_size,
            max_pending=self.config.max_log_buffer,
            max_pending_bytes=self.config.max_log_buffer_bytes,
            retry_timeout=self.config.store_retry_timeout,
            secrets=secrets,
            max_log_bytes=self.config.max_log_bytes,
        )
        pipe.start()
        return pipe

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
        """Stop every build (``interrupted``), flushing what was accepted, within a bound;
        one running steps in a sandbox that outlives us (E2B) is left to the next server
        instead (``detached``, see resume.py)."""
        self._closing = True
        for task in self._background:
            task.cancel()
        jobs = list(self._jobs.values())
        for job in jobs:
            if job.detachable and hasattr(self.providers.get(job.row.provider), "reattach"):
                self._stop(job, "detached", "the Jupyter server stopped: another takes over")
            else:
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
        await self._run_to_end(job, self._start(job))

    async def _start(self, job: _Job) -> int:
        """Queued, starting, the sandbox, running: then the steps (their exit code)."""
        row, spec, pipe = job.row, job.spec, job.pipe
        await pipe.event("status", {"status": "queued"})
        await self._claim_slot(job)
        await pipe.event("status", {"status": "starting"})
        self._arm_deadline(job, spec.timeout or self.config.default_timeout)
        provider = self.providers[row.provider]
        # network is passed only when off: providers that cannot do it are refused
        # before the build is accepted (ProviderCatalog.choose)
        offline = {} if spec.network else {"network": False}
        job.sandbox = await provider.create(
            row.id, workspace=job.workspace, files=spec.files, env=spec.env, **offline
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
        log.info(
            "agentbuild: build %s of %s started in sandbox %s",
            row.id,
            row.owner,
            job.sandbox.id,
        )
        return await self._run_steps(job)

    def _arm_deadline(self, job: _Job, seconds: float) -> None:
        timeout = job.spec.timeout or self.config.default_timeout
        job.deadline = asyncio.get_running_loop().call_later(
            max(0.0, seconds),
            self._stop,
            job,
            "timed_out",
            f"the build exceeded its timeout of {timeout:g}s",
        )

    async def _run_to_end(self, job: _Job, steps: Awaitable[int]) -> None:
        """Await ``steps`` (the build's start and steps, or a resumed build's remaining
        steps), run the after-steps hooks, and end the build with the outcome, whatever
        happened (a stop, the store gone, the server stopping, a provider failure)."""
        row, pipe = job.row, job.pipe
        status, exit_code, error = "failed", None, None
        try:
            exit_code = await steps
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
        except asyncio.CancelledError:
            status, error = "interrupted", "the Jupyter server stopped while the build ran"
        except Exception as exc:  # a provider or store failure, not a failing step
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            log.error(
                "agentbuild: build %s of %s could not run: %s",
                row.id,
                row.owner,
                pipe.mask(error),
                exc_info=not pipe.has_secrets,
            )
        finally:
            if job.deadline is not None:
                job.deadline.cancel()
            await self._finish(job, status, exit_code, error)

    async def _run_steps(self, job: _Job, first: int = 0, announced: bool = False) -> int:
        """Steps from ``first`` on (``announced``: its ``step_started`` is stored already,
        a resumed build's); the first non-zero exit code, else 0."""
        assert job.sandbox is not None
        pipe = job.pipe
        job.detachable = True
        for index, step in enumerate(job.spec.steps):
            if index < first:
                continue
            self._check_stopped(job)
            if not (announced and index == first):
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
                job.detachable = False
                return result.exit_code
        job.detachable = False
        return 0

    async def _run_step(
        self, job: _Job, command: str, index: int, step_timeout: float | None, on_output: Any
    ) -> StepResult:
        """Run one step; on a stop request, cancel it until it is really gone.

        Cancelling is repeated because a stop can land before the step's process
        exists, when a single cancel would find nothing to kill.
        """
        assert job.sandbox is not None
        if job.stop_reason == "detached":
            self._check_stopped(job)  # not started: the next server starts it
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
            if job.stop_reason == "detached":  # the step runs on for the next server
                await resume.leave_step(job.sandbox, step_task)
                self._check_stopped(job)
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
        try:
            await self.store.update_build(job.row.id, sandbox_state=state)
            job.recorded_state = state
        except Exception as exc:  # the next heartbeat tries again
            log.warning(
                "agentbuild: recording the sandbox of build %s failed (%s: %s); will retry",
                job.row.id,
                type(exc).__name__,
                exc,
            )

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
        """Final flush, then the terminal status entry and the terminal row, stored in one
        transaction: whoever sees the end of the stream (here or on another server) and
        then reads the build finds it terminal, with its exit code."""
        row, pipe = job.row, job.pipe
        if error:
            error = pipe.mask(error)
        try:
            if status == "detached":
                if await resume.detach(self, job):
                    return
                status, error = "interrupted", "the Jupyter server stopped while the build ran"
            # A kept sandbox (a preview), or one that could not be destroyed, stays
            # recorded in the same write, so a reaper can still find what is left.
            kept = await self._release_sandbox(job)
            data: dict[str, Any] = {"status": status, "exit_code": exit_code}
            if error:
                data["error"] = error
            ended, elsewhere = False, asyncio.Event()
            commit = self._terminal_commit(row.id, status, exit_code, error, kept, elsewhere)
            try:
                ended = await pipe.end("status", data, commit)
            except StoreUnavailable:
                log.error(
                    "agentbuild: %d log entries of build %s could not be stored",
                    pipe.last_seq - pipe.stored_seq,
                    row.id,
                )
            if not ended and not elsewhere.is_set():
                # The stream could not be ended in the store: at least end the row.
                await self._write_terminal(row.id, status, exit_code, error, kept)
            self._log_end(row, status, exit_code, error)
            with swallowed(log, f"closing the log stream of build {row.id}"):
                await pipe.close()
        finally:
            self._jobs.pop(row.id, None)
            freed, self._slot_freed = self._slot_freed, asyncio.Event()
            freed.set()
            self.on_activity()

    async def _release_sandbox(self, job: _Job) -> dict[str, Any] | None:
        """Destroy the build's sandbox unless a hook kept it; the ``sandbox_state`` to
        record with the terminal row: the kept sandbox's, or the one that could not be
        destroyed (a reaper finds it there), else None."""
        sandbox = job.sandbox
        if sandbox is None:
            return None
        if job.sandbox_kept:
            return sandbox.state()
        try:
            await sandbox.destroy()
            return None
        except Exception as exc:
            try:
                state: dict[str, Any] | None = sandbox.state()
            except Exception:
                state = job.recorded_state
            log.warning(
                "agentbuild: destroying sandbox %s of build %s failed (%s: %s); "
                "it stays recorded until it is removed",
                sandbox.id,
                job.row.id,
                type(exc).__name__,
                exc,
            )
            if state is not None:
                self._leftovers[job.row.id] = (job.row.provider, sandbox.id, state)
            return state

    def _terminal_commit(
        self,
        build_id: str,
        status: str,
        exit_code: int | None,
        error: str | None,
        sandbox_state: dict[str, Any] | None,
        elsewhere: asyncio.Event,
    ) -> Callable[[tuple[int, str]], Awaitable[bool]]:
        """How the pipe stores its last entry: with the terminal row, in one transaction
        (retried through a brief outage). ``elsewhere`` is set when the build had already
        been ended by someone else (its row must then stay as they left it)."""

        async def commit(entry: tuple[int, str]) -> bool:
            async def once() -> bool:
                return await self.store.end_with_entry(
                    build_id,
                    entry,
                    from_statuses=list(ACTIVE),
                    to_status=status,
                    exit_code=exit_code,
                    error=error,
                    finished_at=utcnow(),
                    sandbox_state=sandbox_state,
                )

            try:
                if await with_backoff(once, patience=self.config.store_retry_timeout):
                    return True
            except Exception as exc:
                log.error("agentbuild: could not store the end of build %s: %s", build_id, exc)
                return False
            # Refused: perhaps an earlier attempt committed and only its answer was lost.
            now = await self.store.get_build(build_id)
            if now is not None and now.last_seq >= entry[0] and now.status == status:
                return True
            elsewhere.set()
            log.warning(
                "agentbuild: build %s was ended elsewhere (%s) before this server could",
                build_id,
                now.status if now is not None else "deleted",
            )
            return False

        return commit

    def _log_end(
        self, row: BuildRow, status: str, exit_code: int | None, error: str | None
    ) -> None:
        """One line per build end, for operators."""
        if status == "succeeded":
            log.info("agentbuild: build %s of %s succeeded", row.id, row.owner)
        elif status == "failed":
            log.info(
                "agentbuild: build %s of %s failed (exit code %s): %s",
                row.id,
                row.owner,
                exit_code,
                error,
            )
        else:  # cancelled | timed_out | interrupted
            log.info("agentbuild: build %s of %s %s: %s", row.id, row.owner, status, error)

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
        await self._remove_leftovers()
        await self.reconcile()

    async def _remove_leftovers(self) -> None:
        """Try again to remove the sandboxes whose destroy failed; a removed one is no
        longer recorded (a server restart reaps the rest: they stay in the store)."""
        for build_id, (name, sandbox_id, state) in list(self._leftovers.items()):
            provider = self.providers.get(name)
            try:
                gone = provider is not None and await provider.remove(sandbox_id, state)
            except Exception as exc:
                log.warning(
                    "agentbuild: removing sandbox %s of build %s failed again (%s: %s)",
                    sandbox_id,
                    build_id,
                    type(exc).__name__,
                    exc,
                )
                continue
            if gone:
                await self.store.update_build(build_id, sandbox_state=None)
                log.info("agentbuild: sandbox %s of build %s removed", sandbox_id, build_id)
            self._leftovers.pop(build_id, None)

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
        if row.runner_id is None and row.status == "running":
            return True  # left by a server that stopped gracefully (resume.detach)
        # A live server that took the build (its process older than the build, so the pid
        # was not reused) is alive however late its heartbeat under load: reaping it would
        # kill a live build's processes.
        return server_dead(
            host=row.runner_host,
            pid=row.runner_pid,
            last_seen=(row.heartbeat_at or row.created_at).timestamp(),
            stale_after=self.config.stale_after,
            now=now,
            taken_at=row.created_at.timestamp(),
        )

    async def reconcile(self) -> None:
        """Mark builds whose server died ``interrupted`` and reap their sandboxes."""
        now = time.time()
        for row in await self.store.active_builds(ACTIVE):
            if not self._is_dead(row, now):
                continue
            if await resume.take_over(self, row) is not False:  # resumed here or elsewhere
                continue
            await resume.reap_unrecorded(self, row)
            # A sandbox that cannot be reaped from here (another host) stays recorded:
            # the next server starting there reaps it (PreviewManager.start).
            keep = None
            if row.sandbox_id and row.sandbox_state and row.provider in self.providers:
                try:
                    provider = self.providers[row.provider]
                    if not await provider.reap(row.sandbox_id, row.sandbox_state):
                        keep = row.sandbox_state
                except Exception as exc:
                    keep = row.sandbox_state  # still there: stays recorded for a later reaper
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
                log.info(
                    "agentbuild: build %s of %s interrupted: its server died (sandbox %s)",
                    row.id,
                    row.owner,
                    "left recorded" if keep else "reaped" if row.sandbox_state else "none",
                )

    # -- builds taken over from a dead server (see resume.py) -------------------

    def adopt(
        self,
        row: BuildRow,
        spec: BuildSpec,
        sandbox: Sandbox,
        *,
        first_step: int,
        announced: bool,
        secrets: list[str],
    ) -> None:
        """Run a dead server's build on in this process, from ``first_step``, in its
        sandbox (already reattached) and its ``seq`` space."""
        job = _Job(row=row, spec=spec, workspace=None, pipe=self._new_pipe(row, secrets))
        job.sandbox = sandbox
        self._jobs[row.id] = job
        job.task = asyncio.create_task(
            self._run_adopted(job, first_step, announced), name=f"build-{row.id}"
        )
        self.on_activity()

    async def _run_adopted(self, job: _Job, first_step: int, announced: bool) -> None:
        """:meth:`_run` from the steps on; the build's timeout counts from its start."""
        row = job.row
        timeout = job.spec.timeout or self.config.default_timeout
        elapsed = time.time() - (row.started_at or row.created_at).timestamp()
        self._arm_deadline(job, timeout - elapsed)
        await self._run_to_end(job, self._run_steps(job, first_step, announced))


__all__ = ["Runner", "RunnerConfig", "TERMINAL"]

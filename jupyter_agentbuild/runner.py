"""The build runner: one asyncio task per build, driving the state machine.

``queued -> starting -> running -> succeeded | failed | cancelled | timed_out | interrupted``

The runner is the only writer of a build's status and entry stream while it runs
the build. Every field is written at the moment it becomes true, so a server that dies
leaves a row that says how far the build got; the final flush completes before the
terminal status, and the terminal status is the last entry, so a reader that saw the
end has seen everything. The store stays the source of truth: live state here is only a
cache and a wake-up signal for readers in this process (other servers read the store).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from . import build_end, build_steps, orphans, resume
from .aio import first_of
from .build_job import DETACHED, AfterSteps, BuildHook, BuildJob, BuildStopped
from .buildlog import BuildLog, StoreUnavailable
from .entries import ACTIVE, TERMINAL, utcnow
from .liveness import server_dead
from .retry import repeat_forever, with_backoff
from .runner_settings import RunnerSettings
from .sandbox.base import Sandbox, SandboxProvider
from .spec import BuildSpec
from .store.repository import BuildRow, Store
from .swallow import swallowed
from .vocabulary import BuildStatus, EventType

log = logging.getLogger(__name__)


class Runner(RunnerSettings):
    """Runs builds in this server process and reconciles those of dead processes."""

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, SandboxProvider],
        *,
        on_activity: Callable[[], None] | None = None,
        hooks: list[BuildHook] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.hooks: list[BuildHook] = list(hooks or [])
        self.providers = providers
        self.on_activity = on_activity or (lambda: None)
        #: Identifies this server in the builds it runs (their ``runner_*`` columns).
        self.server_id = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._jobs: dict[str, BuildJob] = {}
        self._slot_freed = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False
        #: Sandboxes whose destroy failed, by build id: ``(provider, sandbox_id, state)``.
        #: Their state stays recorded in the store, and each heartbeat tries again.
        self._leftovers: dict[str, tuple[str, str, dict[str, Any]]] = {}

    # -- public API ------------------------------------------------------------

    def server_fields(self) -> dict[str, Any]:
        """The columns that record this server as the one running a build."""
        return {"runner_id": self.server_id, "runner_host": self.host, "runner_pid": self.pid}

    async def start(self) -> None:
        """Reconcile builds left behind by dead processes, then start the heartbeat."""
        await self.reconcile()
        task = asyncio.create_task(
            repeat_forever(self.heartbeat_interval, self._heartbeat, "heartbeat"),
            name="agentbuild-heartbeat",
        )
        self._background.add(task)

    def build_log(self, build_id: str) -> BuildLog | None:
        """The live log of a build running here (None: it runs elsewhere, or has ended)."""
        job = self._jobs.get(build_id)
        return job.build_log if job else None

    def sandbox_of(self, build_id: str) -> Sandbox | None:
        """The sandbox of a build running here (None: not here, or not created yet)."""
        job = self._jobs.get(build_id)
        return job.sandbox if job else None

    def submit(self, row: BuildRow, spec: BuildSpec, workspace: Path | None) -> None:
        """Take a freshly inserted ``queued`` build and run it in a task of its own."""
        if self._closing:
            raise RuntimeError("the runner is shutting down")
        build_log = self._new_build_log(row, spec.secret_values)
        job = BuildJob(row=row, spec=spec, workspace=workspace, build_log=build_log)
        self._jobs[row.id] = job
        job.task = asyncio.create_task(self._run(job), name=f"build-{row.id}")
        log.info("agentbuild: build %s of %s queued (%s)", row.id, row.owner, row.provider)
        self.on_activity()

    def _new_build_log(self, row: BuildRow, secrets: list[str]) -> BuildLog:
        build_log = BuildLog(
            row.id,
            self.store.append_chunks,
            last_seq=row.last_seq,
            flush_interval=self.log_flush_interval,
            chunk_size=self.log_chunk_size,
            max_pending=self.max_log_buffer,
            max_pending_bytes=self.max_log_buffer_bytes,
            retry_timeout=self.store_retry_timeout,
            secrets=secrets,
            max_log_bytes=self.max_log_bytes or None,
        )
        build_log.start()
        return build_log

    async def cancel(
        self, build_id: str, reason: str = BuildStatus.CANCELLED, message: str = ""
    ) -> bool:
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
                self._stop(job, DETACHED, "the Jupyter server stopped: another takes over")
            else:
                self._stop(
                    job, BuildStatus.INTERRUPTED, "the Jupyter server stopped while the build ran"
                )
        tasks = [job.task for job in jobs if job.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.stop_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)

    # -- the build task --------------------------------------------------------

    def _stop(self, job: BuildJob, reason: str, message: str) -> None:
        if job.stop_reason is None:
            job.stop_reason = reason
            job.stop_message = message
        job.wake.set()

    async def _run(self, job: BuildJob) -> None:
        await self._run_to_end(job, self._start(job))

    async def _start(self, job: BuildJob) -> int:
        """Queued, starting, the sandbox, running: then the steps (their exit code)."""
        row, spec, build_log = job.row, job.spec, job.build_log
        await build_log.event(EventType.STATUS, {"status": BuildStatus.QUEUED})
        await self._claim_slot(job)
        await build_log.event(EventType.STATUS, {"status": BuildStatus.STARTING})
        self._arm_deadline(job, spec.timeout or self.default_timeout)
        provider = self.providers[row.provider]
        # network is passed only when off: providers that cannot do it are refused
        # before the build is accepted (ProviderCatalog.choose)
        offline = {} if spec.network else {"network": False}
        job.sandbox = await provider.create(
            row.id, workspace=job.workspace, files=spec.files, env=spec.env, **offline
        )
        job.check_stopped()
        started = utcnow()
        job.recorded_state = job.sandbox.state()
        sandbox = job.sandbox
        await with_backoff(
            lambda: self.store.update_build(
                row.id,
                status=BuildStatus.RUNNING,
                sandbox_id=sandbox.id,
                sandbox_state=job.recorded_state,
                started_at=started,
            ),
            patience=self.store_retry_timeout,
        )
        await build_log.event(
            EventType.STATUS, {"status": BuildStatus.RUNNING, "sandbox_id": job.sandbox.id}
        )
        log.info(
            "agentbuild: build %s of %s started in sandbox %s",
            row.id,
            row.owner,
            job.sandbox.id,
        )
        return await build_steps.run_steps(self, job)

    def _arm_deadline(self, job: BuildJob, seconds: float) -> None:
        timeout = job.spec.timeout or self.default_timeout
        job.deadline = asyncio.get_running_loop().call_later(
            max(0.0, seconds),
            self._stop,
            job,
            BuildStatus.TIMED_OUT,
            f"the build exceeded its timeout of {timeout:g}s",
        )

    async def _run_to_end(self, job: BuildJob, steps: Awaitable[int]) -> None:
        """Await ``steps`` (the build's start and steps, or a resumed build's remaining
        steps), run the after-steps hooks, and end the build with the outcome, whatever
        happened (a stop, the store gone, the server stopping, a provider failure)."""
        row, build_log = job.row, job.build_log
        status: str = BuildStatus.FAILED  # or a stop reason (DETACHED is not a status)
        exit_code: int | None = None
        error: str | None = None
        try:
            exit_code = await steps
            job.check_stopped()
            await self._after_steps(job, succeeded=exit_code == 0)
            job.check_stopped()
            status = BuildStatus.SUCCEEDED if exit_code == 0 else BuildStatus.FAILED
            if exit_code != 0:
                error = f"step failed with exit code {exit_code}"
        except BuildStopped:
            status = job.stop_reason or BuildStatus.CANCELLED
            error = job.stop_message
            exit_code = job.last_exit_code
        except StoreUnavailable as exc:
            status, error = BuildStatus.FAILED, f"the build database stopped accepting logs: {exc}"
        except asyncio.CancelledError:
            status, error = (
                BuildStatus.INTERRUPTED,
                "the Jupyter server stopped while the build ran",
            )
        except Exception as exc:  # a provider or store failure, not a failing step
            status, error = BuildStatus.FAILED, f"{type(exc).__name__}: {exc}"
            log.error(
                "agentbuild: build %s of %s could not run: %s",
                row.id,
                row.owner,
                build_log.mask(error),
                exc_info=not build_log.has_secrets,
            )
        finally:
            if job.deadline is not None:
                job.deadline.cancel()
            await self._finish(job, status, exit_code, error)

    async def _after_steps(self, job: BuildJob, *, succeeded: bool) -> None:
        assert job.sandbox is not None
        ctx = AfterSteps(
            build_id=job.row.id,
            owner=job.row.owner,
            spec=job.spec,
            sandbox=job.sandbox,
            build_log=job.build_log,
            store=self.store,
            succeeded=succeeded,
            stop=job.wake,
        )
        for hook in self.hooks:
            await hook.after_steps(ctx)
        job.sandbox_kept = ctx.sandbox_kept

    async def _claim_slot(self, job: BuildJob) -> None:
        """Wait in ``queued`` while the owner already runs ``max_concurrent_builds``, then
        claim the build (``queued -> starting``). Count and claim are one step in the
        database, under a per-owner lock: neither two builds of this server nor two servers
        sharing the database can both take the last slot."""
        while True:
            job.check_stopped()
            # retried while the database restarts (else the build would fail on it)
            claimed = await with_backoff(
                lambda: self.store.claim_slot(
                    job.row.id,
                    owner=job.row.owner,
                    limit=self.max_concurrent_builds,
                    busy_statuses=[BuildStatus.STARTING, BuildStatus.RUNNING],
                    to_status=BuildStatus.STARTING,
                    **self.server_fields(),
                ),
                patience=self.store_retry_timeout,
            )
            if claimed is None:
                job.check_stopped()
                raise BuildStopped("the build left the queue elsewhere")
            if claimed:
                return
            # Other servers free slots too: re-check now and then.
            await first_of(
                self._slot_freed.wait(), job.wake.wait(), at_most=self.heartbeat_interval
            )

    async def _finish(
        self, job: BuildJob, status: str, exit_code: int | None, error: str | None
    ) -> None:
        """Final flush, then the terminal status entry and the terminal row, stored in one
        transaction: whoever sees the end of the stream (here or on another server) and
        then reads the build finds it terminal, with its exit code."""
        row, build_log = job.row, job.build_log
        if error:
            error = build_log.mask(error)
        try:
            if status == DETACHED:
                if await resume.detach(self, job):
                    return
                status, error = (
                    BuildStatus.INTERRUPTED,
                    "the Jupyter server stopped while the build ran",
                )
            # A kept sandbox (a preview), or one that could not be destroyed, stays
            # recorded in the same write, so a reaper can still find what is left.
            kept = await build_end.release_sandbox(job, self._leftovers)
            outcome = build_end.Outcome(status, exit_code, error, kept)
            data: dict[str, Any] = {"status": status, "exit_code": exit_code}
            if error:
                data["error"] = error
            ended, elsewhere = False, asyncio.Event()
            patience = self.store_retry_timeout
            commit = build_end.terminal_commit(self.store, patience, row.id, outcome, elsewhere)
            try:
                ended = await build_log.end(EventType.STATUS, data, commit)
            except StoreUnavailable:
                log.error(
                    "agentbuild: %d log entries of build %s could not be stored",
                    build_log.last_seq - build_log.stored_seq,
                    row.id,
                )
            if not ended and not elsewhere.is_set():
                # The stream could not be ended in the store: at least end the row.
                await build_end.write_terminal(self.store, patience, row.id, outcome)
            build_end.log_end(row, status, exit_code, error)
            with swallowed(log, f"closing the log stream of build {row.id}"):
                await build_log.close()
        finally:
            self._jobs.pop(row.id, None)
            freed, self._slot_freed = self._slot_freed, asyncio.Event()
            freed.set()
            self.on_activity()

    # -- heartbeat and reconciliation -----------------------------------------

    async def _heartbeat(self) -> None:
        """One beat: our builds are alive, their sandboxes recorded, remote cancels
        applied; then dead servers' builds are reconciled."""
        if self._jobs:
            self.on_activity()
            await self.store.heartbeat(self.server_id, utcnow())
            for job in list(self._jobs.values()):
                await build_steps.record_sandbox_state(self.store, job)
            await self._apply_remote_cancels()
        await orphans.remove_leftovers(self.providers, self.store, self._leftovers)
        await self.reconcile()

    async def _apply_remote_cancels(self) -> None:
        """Another server may have asked to cancel one of our builds (through the store)."""
        for build_id in await self.store.cancel_requests(self.server_id):
            job = self._jobs.get(build_id)
            if job is not None:
                self._stop(job, BuildStatus.CANCELLED, "cancelled by request")

    async def reconcile(self) -> None:
        """End the builds whose server died: resumed here or elsewhere (resume.py), or
        ``interrupted`` with their sandboxes reaped (orphans.py)."""
        now = time.time()
        for row in await self.store.active_builds(ACTIVE):
            if self._is_dead(row, now):
                await orphans.end_orphan(self, row)

    def _is_dead(self, row: BuildRow, now: float) -> bool:
        if row.id in self._jobs:
            return False
        if row.runner_id == self.server_id:
            return True  # ours, but no task: it can never finish
        if row.runner_id is None and row.status == BuildStatus.RUNNING:
            return True  # left by a server that stopped gracefully (resume.detach)
        # A live server that took the build (its process older than the build, so the pid
        # was not reused) is alive however late its heartbeat under load: reaping it would
        # kill a live build's processes.
        return server_dead(
            host=row.runner_host,
            pid=row.runner_pid,
            last_seen=(row.heartbeat_at or row.created_at).timestamp(),
            stale_after=self.stale_after,
            now=now,
            taken_at=row.created_at.timestamp(),
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
        job = BuildJob(
            row=row, spec=spec, workspace=None, build_log=self._new_build_log(row, secrets)
        )
        job.sandbox = sandbox
        self._jobs[row.id] = job
        job.task = asyncio.create_task(
            self._run_adopted(job, first_step, announced), name=f"build-{row.id}"
        )
        self.on_activity()

    async def _run_adopted(self, job: BuildJob, first_step: int, announced: bool) -> None:
        """:meth:`_run` from the steps on; the build's timeout counts from its start."""
        row = job.row
        timeout = job.spec.timeout or self.default_timeout
        elapsed = time.time() - (row.started_at or row.created_at).timestamp()
        self._arm_deadline(job, timeout - elapsed)
        await self._run_to_end(job, build_steps.run_steps(self, job, first_step, announced))


__all__ = ["AfterSteps", "BuildHook", "Runner", "TERMINAL"]

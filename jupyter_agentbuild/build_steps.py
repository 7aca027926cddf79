"""A build's steps, one after the other, in its sandbox: each announced, its output
into the build's log, stopped on request until its processes are really gone."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from . import resume
from .aio import first_of
from .build_job import DETACHED, BuildJob
from .sandbox.base import StepResult
from .store.repository import Store
from .vocabulary import BuildStatus, EventType

if TYPE_CHECKING:
    from .runner import Runner

#: The runner's logger: operators follow a build's life in one logger's lines.
log = logging.getLogger("jupyter_agentbuild.runner")


async def run_steps(runner: Runner, job: BuildJob, first: int = 0, announced: bool = False) -> int:
    """Steps from ``first`` on (``announced``: its ``step_started`` is stored already,
    a resumed build's); the first non-zero exit code, else 0."""
    assert job.sandbox is not None
    build_log = job.build_log
    job.detachable = True
    for index, step in enumerate(job.spec.steps):
        if index < first:
            continue
        job.check_stopped()
        if not (announced and index == first):
            await build_log.event(
                EventType.STEP_STARTED, {"step": index, "name": step.name or f"step {index + 1}"}
            )
        began = time.monotonic()
        job.step_started = False

        async def on_output(stream: str, lines: list[str], continued: bool, i: int = index) -> None:
            if not job.step_started:
                job.step_started = True
                await record_sandbox_state(runner.store, job)
            await build_log.log(stream, i, lines, continued)

        result = await run_step(job, step.run, index, step.timeout, on_output)
        if result.timed_out and job.stop_reason is None:
            job.stop_reason = BuildStatus.TIMED_OUT
            job.stop_message = f"step {index + 1} exceeded its timeout of {step.timeout:g}s"
        await build_log.event(
            EventType.STEP_FINISHED,
            {
                "step": index,
                "exit_code": result.exit_code,
                "duration": round(time.monotonic() - began, 3),
            },
        )
        job.check_stopped(exit_code=result.exit_code)
        if result.exit_code != 0:
            job.detachable = False
            return result.exit_code
    job.detachable = False
    return 0


async def run_step(
    job: BuildJob, command: str, index: int, step_timeout: float | None, on_output: Any
) -> StepResult:
    """Run one step; on a stop request, cancel it until it is really gone.

    Cancelling is repeated because a stop can land before the step's process
    exists, when a single cancel would find nothing to kill.
    """
    assert job.sandbox is not None
    if job.stop_reason == DETACHED:
        job.check_stopped()  # not started: the next server starts it
    step_task = asyncio.create_task(
        job.sandbox.run_step(command, step=index, timeout=step_timeout, on_output=on_output)
    )
    while not step_task.done():
        await first_of(step_task, job.wake.wait())
        if step_task.done():
            break
        if job.stop_reason == DETACHED:  # the step runs on for the next server
            await resume.leave_step(job.sandbox, step_task)
            job.check_stopped()
        await job.sandbox.cancel()
        await asyncio.wait([step_task], timeout=0.5)
    return step_task.result()


async def record_sandbox_state(store: Store, job: BuildJob) -> None:
    """Record process groups as soon as a step runs, so a successor can reap them
    (and on heartbeats, when they changed: an unchanged state is not written again)."""
    if job.sandbox is None:
        return
    state = job.sandbox.state()
    if state == job.recorded_state:
        return
    try:
        await store.update_build(job.row.id, sandbox_state=state)
        job.recorded_state = state
    except Exception as exc:  # the next heartbeat tries again
        log.warning(
            "agentbuild: recording the sandbox of build %s failed (%s: %s); will retry",
            job.row.id,
            type(exc).__name__,
            exc,
        )


__all__ = ["record_sandbox_state", "run_step", "run_steps"]

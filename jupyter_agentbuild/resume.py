"""Taking over a build whose server died while its sandbox lives on (an E2B VM).

A local build dies with its server (its processes are the server's children), but an E2B
VM keeps running. A server that finds such a build, during reconciliation, takes it over
instead of marking it ``interrupted``:

1. it claims the build in one conditional UPDATE (status still ``running``, runner still
   the dead one), so of two servers reconciling at once exactly one resumes it;
2. it reads the stored entries to find where the build was: the step that started last
   and, for it, how many line pieces of each stream reached the store;
3. the provider reconnects to the VM (by id) and the runner continues the build in the
   same ``seq`` space: the running step is followed from the copies of its output kept
   in the VM, skipping what is stored, so every line is stored exactly once.

A provider takes part by having ``reattach(build_id, state, step=, skip=)``; a build
that cannot be resumed (no such provider, the VM gone) is reconciled as before.

A server that stops gracefully (a restart) does not wait to be found dead: it *detaches*
such a build (:func:`detach`): it stores what it accepted, leaves the step running in the
VM, bounds the VM's life to what remains of the build's timeout and clears its own runner
fields, so the next server to reconcile takes the build over at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .entries import utcnow
from .spec import parse_spec
from .store.repository import BuildRow, Store
from .vocabulary import BuildStatus, EntryKind, EventType, Stream

if TYPE_CHECKING:
    from .build_job import BuildJob
    from .runner import Runner

log = logging.getLogger(__name__)

_PAGE = 10_000


@dataclass
class ResumePoint:
    """Where a build was when its server died."""

    #: The next step to run: the one that started last (it may still run in the sandbox),
    #: or the one after the last that finished.
    step: int = 0
    #: Whether ``step`` had started (its ``step_started`` entry is stored).
    started: bool = False
    #: Line pieces of ``step`` stored per stream.
    stored: dict[str, int] = field(default_factory=lambda: {Stream.STDOUT: 0, Stream.STDERR: 0})
    #: The step before ``step`` finished with a non-zero exit code: the build is over
    #: (its server died before storing the end), nothing more may run.
    failed: bool = False


async def resume_point(store: Store, build_id: str) -> ResumePoint:
    """Read the build's entries and find where it stood."""
    point = ResumePoint()
    after = 0
    while True:
        page = await store.read_entries(build_id, after=after, limit=_PAGE)
        for text in page:
            entry: dict[str, Any] = json.loads(text)
            after = int(entry["seq"])
            if entry.get("kind") == EntryKind.LOG:
                if point.started and entry.get("step") == point.step:
                    stream = str(entry.get("stream"))
                    point.stored[stream] = point.stored.get(stream, 0) + 1
            elif entry.get("type") == EventType.STEP_STARTED:
                point = ResumePoint(step=int(entry["data"]["step"]), started=True)
            elif entry.get("type") == EventType.STEP_FINISHED:
                data = entry["data"]
                point = ResumePoint(step=int(data["step"]) + 1, failed=data.get("exit_code") != 0)
        if len(page) < _PAGE:
            return point


async def claim(store: Store, row: BuildRow, fields: dict[str, Any]) -> bool:
    """Make this server the build's runner, if it still is the dead one's."""
    return await store.hand_over(row.id, held_by=row.runner_id, heartbeat_at=utcnow(), **fields)


async def take_over(runner: Runner, row: BuildRow) -> bool | None:
    """Resume ``row`` (a dead server's build) in ``runner`` when its sandbox can be
    reattached: True when it runs here now, None when another server claimed it first
    (the caller leaves it alone), False when it cannot be resumed (the caller reconciles
    it as before: ``interrupted``, its sandbox reaped)."""
    provider = runner.providers.get(row.provider)
    reattach = getattr(provider, "reattach", None)
    if reattach is None or row.status != BuildStatus.RUNNING or not row.sandbox_state:
        return False
    if not await claim(runner.store, row, runner.server_fields()):
        return None
    try:
        full = await runner.store.get_build(row.id)
        if full is None or full.status != BuildStatus.RUNNING:
            return False
        spec = parse_spec(full.spec)
        point = await resume_point(runner.store, row.id)
        if point.failed:
            # A failing step ends a build: resuming would run the steps after it.
            log.info("agentbuild: build %s ended with a failed step before its server died", row.id)
            return False
        step = point.step if point.started else -1
        sandbox = await reattach(row.id, full.sandbox_state or {}, step=step, skip=point.stored)
    except Exception as exc:
        log.warning("agentbuild: build %s cannot be resumed: %s", row.id, exc)
        return False
    env = getattr(sandbox, "build_env", {})
    secrets = [env[key] for key in spec.secret_env if env.get(key)]
    runner.adopt(
        full, spec, sandbox, first_step=point.step, announced=point.started, secrets=secrets
    )
    log.info("agentbuild: build %s resumed at step %d (its server died)", row.id, point.step)
    return True


async def reap_unrecorded(runner: Runner, row: BuildRow) -> None:
    """A build whose server died before recording its sandbox: a provider that can find
    sandboxes by build (E2B's metadata) kills them."""
    reap_build = getattr(runner.providers.get(row.provider), "reap_build", None)
    if reap_build is not None and not row.sandbox_id:
        try:
            await reap_build(row.id)
        except Exception as exc:
            log.warning("agentbuild: reaping the sandboxes of %s failed: %s", row.id, exc)


async def detach(runner: Runner, job: BuildJob) -> bool:
    """Leave ``job`` (whose step was left running, see ``E2BSandbox.detach``) to the next
    server; False when it must be interrupted instead: a sandbox that cannot be left, a
    step that failed (the build is over), or a store that did not take its last entries
    (a successor could not tell where it stood)."""
    keep_for = getattr(job.sandbox, "keep_for", None)
    if keep_for is None or job.last_exit_code not in (None, 0):
        return False
    build_id = job.row.id
    try:
        await job.build_log.close()
        row = await runner.store.get_build(build_id)
    except Exception as exc:  # StoreUnavailable included
        log.error("agentbuild: build %s cannot be left to another server: %s", build_id, exc)
        return False
    if row is None or row.status != BuildStatus.RUNNING:
        return False
    timeout = job.spec.timeout or runner.default_timeout
    began = (row.started_at or row.created_at).timestamp()
    # never past the build's own deadline, if no server ever takes it over
    await keep_for(timeout - (time.time() - began))
    try:
        await runner.store.hand_over(
            build_id, held_by=runner.server_id, runner_id=None, runner_host=None, runner_pid=None
        )
    except Exception as exc:  # still ours: found dead later (its pid, its stale heartbeat)
        log.warning("agentbuild: build %s stays recorded as this server's: %s", build_id, exc)
    log.info(
        "agentbuild: build %s of %s left running in sandbox %s for the next server",
        build_id,
        job.row.owner,
        job.sandbox.id if job.sandbox is not None else None,
    )
    return True


async def leave_step(sandbox: Any, step_task: asyncio.Task[Any]) -> None:
    """Stop following a running step without stopping it (the sandbox is detached)."""
    sandbox.detach()
    step_task.cancel()
    await asyncio.wait([step_task])

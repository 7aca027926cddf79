"""resume.py on a real SQLite store: the claim of a dead server's build is won once, and
the resume point is read from the stored entries."""

from __future__ import annotations

import asyncio
from pathlib import Path

from jupyter_agentbuild.entries import encode_event, encode_logs, utcnow
from jupyter_agentbuild.resume import ResumePoint, claim, resume_point
from jupyter_agentbuild.store.repository import Store


async def _store(tmp_path: Path) -> Store:
    return await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'ab.db'}")


async def test_two_servers_claim_a_dead_build_once(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    row = await store.insert_build(
        id="b1",
        owner="o",
        name=None,
        status="running",
        provider="e2b",
        spec={},
        created_at=utcnow(),
        runner_id="dead",
    )
    results = await asyncio.gather(
        claim(store, row, {"runner_id": "one", "runner_host": "h", "runner_pid": 1}),
        claim(store, row, {"runner_id": "two", "runner_host": "h", "runner_pid": 2}),
    )
    assert sorted(results) == [False, True]
    winner = "one" if results[0] else "two"
    assert (await store.get_build("b1")).runner_id == winner  # type: ignore[union-attr]
    await store.dispose()


async def test_the_resume_point_counts_what_the_store_holds(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    await store.insert_build(
        id="b2",
        owner="o",
        name=None,
        status="running",
        provider="e2b",
        spec={},
        created_at=utcnow(),
    )
    assert await resume_point(store, "b2") == ResumePoint()
    ts = "2026-01-01T00:00:00Z"
    entries = [
        encode_event(1, ts, "step_started", {"step": 0, "name": "a"}),
        *encode_logs(2, ts, "stdout", 0, ["x"], False),
        encode_event(3, ts, "step_finished", {"step": 0, "exit_code": 0, "duration": 1}),
        encode_event(4, ts, "step_started", {"step": 1, "name": "b"}),
        *encode_logs(5, ts, "stdout", 1, ["a", "long-piece"], True),
        *encode_logs(7, ts, "stderr", 1, ["e"], False),
    ]
    await store.append_chunks("b2", [(1, entries)])
    point = await resume_point(store, "b2")
    assert point == ResumePoint(step=1, started=True, stored={"stdout": 2, "stderr": 1})
    await store.dispose()


async def test_a_failed_last_step_is_not_resumed(tmp_path: Path) -> None:
    """The server died after storing a step's non-zero exit but before the build's end:
    the build is over, so the resume point says so (take_over then ends it instead of
    running the steps after the failed one)."""
    store = await _store(tmp_path)
    await store.insert_build(
        id="b3", owner="o", name=None, status="running", provider="e2b", spec={},
        created_at=utcnow(),
    )  # fmt: skip
    ts = "2026-01-01T00:00:00Z"
    entries = [
        encode_event(1, ts, "step_started", {"step": 0, "name": "a"}),
        encode_event(2, ts, "step_finished", {"step": 0, "exit_code": 3, "duration": 1}),
    ]
    await store.append_chunks("b3", [(1, entries)])
    assert await resume_point(store, "b3") == ResumePoint(step=1, failed=True)
    ok = encode_event(2, ts, "step_finished", {"step": 0, "exit_code": 0, "duration": 1})
    await store.insert_build(
        id="b4", owner="o", name=None, status="running", provider="e2b", spec={},
        created_at=utcnow(),
    )  # fmt: skip
    await store.append_chunks("b4", [(1, [entries[0], ok])])
    assert await resume_point(store, "b4") == ResumePoint(step=1, failed=False)
    await store.dispose()

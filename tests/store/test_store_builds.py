"""repository.py, the builds table: rows, owner isolation, paging, conditional transitions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from jupyter_agentbuild.store import (
    ACTIVE_STATUSES,
    BuildRow,
    Store,
    make_engine,
)

Run = Callable[[Awaitable[Any]], Any]
MakeBuild = Callable[..., Awaitable[BuildRow]]


def test_insert_then_get_round_trips_every_field(store: Store, run: Run) -> None:
    spec = {"steps": ["echo é", {"run": "x\u0000y", "timeout": 1.5}], "env": {"A": "☃"}}
    paris = timezone(timedelta(hours=1))

    async def main() -> tuple[BuildRow, BuildRow | None]:
        inserted = await store.insert_build(
            id="abc123",
            owner="alice",
            name="demo",
            status="queued",
            provider="local",
            spec=spec,
            created_at=datetime(2025, 3, 1, 13, 0, 0, 123456, tzinfo=paris),
        )
        return inserted, await store.get_build("abc123")

    inserted, got = run(main())
    assert got == inserted
    assert got.pk >= 1
    assert (got.id, got.owner, got.name, got.status, got.provider) == (
        "abc123",
        "alice",
        "demo",
        "queued",
        "local",
    )
    assert got.spec == spec
    assert got.created_at == datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert got.created_at.tzinfo is UTC
    assert got.last_seq == 0
    unset = (got.sandbox_id, got.sandbox_state, got.started_at, got.finished_at, got.exit_code)
    assert unset == (None,) * 5
    assert (got.error, got.preview, got.artifacts, got.heartbeat_at) == (None,) * 4
    assert (got.runner_id, got.runner_host, got.runner_pid) == (None,) * 3
    assert got.cancel_requested is False


def test_insert_build_may_set_more_columns(store: Store, run: Run) -> None:
    row = run(
        store.insert_build(
            id="with-runner",
            owner="alice",
            name=None,
            status="queued",
            provider="local",
            spec={},
            created_at=datetime(2025, 1, 1, tzinfo=UTC),
            runner_id="r1",
            runner_host="host-a",
            runner_pid=42,
        )
    )
    assert (row.runner_id, row.runner_host, row.runner_pid) == ("r1", "host-a", 42)
    with pytest.raises(ValueError, match="bogus"):
        run(
            store.insert_build(
                id="x",
                owner="a",
                name=None,
                status="queued",
                provider="local",
                spec={},
                created_at=datetime(2025, 1, 1, tzinfo=UTC),
                bogus=1,
            )
        )


def test_update_build_sets_any_column(store: Store, make_build: MakeBuild, run: Run) -> None:
    started = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

    async def main() -> tuple[BuildRow | None, bool]:
        build = await make_build()
        changed = await store.update_build(
            build.id,
            status="running",
            sandbox_id="sb-1",
            sandbox_state={"pgid": 4321, "nested": {"ok": True}},
            started_at=started,
            finished_at=started + timedelta(seconds=90),
            exit_code=3,
            error="boom",
            preview={"state": "ready", "url": "/agentbuild/preview/x/"},
            artifacts={"count": 2, "total_size": 10},
            runner_id="r1",
            runner_host="host-a",
            runner_pid=99,
            heartbeat_at=started,
        )
        assert changed
        return await store.get_build(build.id), await store.update_build("missing", error="x")

    got, missing = run(main())
    assert got is not None and not missing
    assert got.status == "running"
    assert got.sandbox_id == "sb-1"
    assert got.sandbox_state == {"pgid": 4321, "nested": {"ok": True}}
    assert got.started_at == started and got.finished_at == started + timedelta(seconds=90)
    assert (got.exit_code, got.error) == (3, "boom")
    assert got.preview == {"state": "ready", "url": "/agentbuild/preview/x/"}
    assert got.artifacts == {"count": 2, "total_size": 10}
    assert (got.runner_id, got.runner_host, got.runner_pid, got.heartbeat_at) == (
        "r1",
        "host-a",
        99,
        started,
    )


def test_update_build_refuses_unknown_columns_and_naive_datetimes(
    store: Store, make_build: MakeBuild, run: Run
) -> None:
    build = run(make_build())
    with pytest.raises(ValueError, match="nope"):
        run(store.update_build(build.id, nope=1))
    with pytest.raises(ValueError, match="pk"):
        run(store.update_build(build.id, pk=5))
    with pytest.raises(Exception, match="naive datetime"):
        run(store.update_build(build.id, started_at=datetime(2025, 1, 1)))
    assert run(store.get_build(build.id)) == build


def test_duplicate_id_is_an_integrity_error(store: Store, make_build: MakeBuild, run: Run) -> None:
    build = run(make_build())
    with pytest.raises(IntegrityError):
        run(
            store.insert_build(
                id=build.id,
                owner="bob",
                name=None,
                status="queued",
                provider="local",
                spec={},
                created_at=datetime(2025, 1, 1, tzinfo=UTC),
            )
        )


def test_get_build_with_owner_hides_other_owners_builds(
    store: Store, make_build: MakeBuild, run: Run
) -> None:
    build = run(make_build(owner="alice"))
    assert run(store.get_build(build.id, owner="alice")) == build
    assert run(store.get_build(build.id, owner="bob")) is None
    assert run(store.get_build("no-such-build")) is None


def test_list_builds_newest_first_with_before_cursor(
    store: Store, make_build: MakeBuild, run: Run
) -> None:
    async def main() -> tuple[list[str], list[BuildRow]]:
        mine = []
        for i in range(23):
            mine.append((await make_build(owner="alice")).id)
            if i % 3 == 0:
                await make_build(owner="bob")  # interleaved: must never show up
        pages: list[BuildRow] = []
        before = None
        while True:
            page = await store.list_builds("alice", limit=5, before=before)
            assert len(page) <= 5
            pages.extend(page)
            if len(page) < 5:
                return mine, pages
            before = page[-1].pk

    mine, listed = run(main())
    assert [b.id for b in listed] == mine[::-1]
    assert all(b.owner == "alice" for b in listed)
    pks = [b.pk for b in listed]
    assert pks == sorted(pks, reverse=True) and len(set(pks)) == len(pks)


def test_list_builds_filters_by_status(store: Store, make_build: MakeBuild, run: Run) -> None:
    async def main() -> list[BuildRow]:
        for status in ["queued", "running", "failed", "running", "succeeded"]:
            await make_build(status=status)
        await make_build(owner="bob", status="running")
        return await store.list_builds("alice", statuses=["running", "queued"], limit=10)

    listed = run(main())
    assert [b.status for b in listed] == ["running", "running", "queued"]
    assert run(store.list_builds("alice", statuses=[], limit=10)) == []


def test_pk_of_a_deleted_newest_build_is_not_reused(
    store: Store, make_build: MakeBuild, run: Run
) -> None:
    """A client holding ``before=pk`` must not later page onto a different build."""

    async def main() -> tuple[int, int]:
        await make_build()
        newest = await make_build()
        await store.delete_build(newest.id)
        return newest.pk, (await make_build()).pk

    deleted_pk, next_pk = run(main())
    assert next_pk > deleted_pk


def test_transition_only_from_the_given_statuses(
    store: Store, make_build: MakeBuild, run: Run
) -> None:
    now = datetime(2025, 2, 2, tzinfo=UTC)

    async def main() -> None:
        build = await make_build(status="queued")
        assert not await store.transition(
            build.id, from_statuses=["running"], to_status="succeeded"
        )
        assert await store.transition(
            build.id, from_statuses=["queued"], to_status="starting", runner_id="r1"
        )
        assert not await store.transition(build.id, from_statuses=["queued"], to_status="starting")
        assert await store.transition(
            build.id,
            from_statuses=ACTIVE_STATUSES,
            to_status="failed",
            finished_at=now,
            exit_code=1,
        )
        assert not await store.transition(
            build.id, from_statuses=ACTIVE_STATUSES, to_status="cancelled"
        )
        assert not await store.transition("missing", from_statuses=["queued"], to_status="x")
        got = await store.get_build(build.id)
        assert got is not None
        assert (got.status, got.runner_id, got.finished_at, got.exit_code) == (
            "failed",
            "r1",
            now,
            1,
        )

    run(main())


def test_end_with_entry_ends_the_build_and_its_stream_together(
    store: Store, make_build: MakeBuild, run: Run
) -> None:
    """A reader sees the terminal status only with the entry that announces it."""
    now = datetime(2025, 2, 2, tzinfo=UTC)

    async def main() -> None:
        build = await make_build(status="running")
        await store.append_chunks(build.id, [(1, ['{"seq":1}', '{"seq":2}'])])
        ended = {"from_statuses": ACTIVE_STATUSES, "to_status": "interrupted"}
        # a stale idea of the stream (its writer appended since): nothing is written
        assert not await store.end_with_entry(build.id, (2, '{"seq":2,"x":1}'), **ended)
        got = await store.get_build(build.id)
        assert got is not None and (got.status, got.last_seq) == ("running", 2)
        assert await store.end_with_entry(
            build.id, (3, '{"seq":3}'), **ended, finished_at=now, error="gone"
        )
        got = await store.get_build(build.id)
        assert got is not None
        assert (got.status, got.last_seq, got.finished_at, got.error) == (
            "interrupted",
            3,
            now,
            "gone",
        )
        assert await store.read_entries(build.id, after=0, limit=10) == [
            '{"seq":1}',
            '{"seq":2}',
            '{"seq":3}',
        ]
        # a second reconciler loses: already terminal, the stream is unchanged
        assert not await store.end_with_entry(build.id, (4, '{"seq":4}'), **ended)
        assert await store.read_entries(build.id, after=3, limit=10) == []

    run(main())


def test_concurrent_claims_of_one_queued_build_have_one_winner(
    store: Store, open_store: Callable[[], Store], make_build: MakeBuild, run: Run
) -> None:
    """Two servers (two engines) and many tasks race to start the same queued build."""
    other = open_store()

    async def main() -> list[bool]:
        build = await make_build(status="queued")
        claims = [
            s.transition(
                build.id, from_statuses=["queued"], to_status="starting", runner_id=f"r{i}"
            )
            for i, s in enumerate([store, other] * 10)
        ]
        return list(await asyncio.gather(*claims))

    assert run(main()).count(True) == 1


def test_slot_claims_of_two_servers_never_exceed_the_limit(
    store: Store, open_store: Callable[[], Store], make_build: MakeBuild, run: Run
) -> None:
    """Count and claim are one step under a per-owner lock: two servers (two engines) and
    many tasks claiming alice's queued builds together start exactly ``limit`` of them."""
    other = open_store()
    busy = ["starting", "running"]

    async def main() -> None:
        await make_build(status="running")
        await make_build(status="succeeded")  # finished builds take no slot
        queued = [await make_build(status="queued") for _ in range(12)]
        bobs = await make_build(owner="bob", status="queued")

        def claim(s: Store, build_id: str, limit: int = 3) -> Awaitable[bool | None]:
            return s.claim_slot(
                build_id, owner="alice", limit=limit, busy_statuses=busy, to_status="starting"
            )

        results = await asyncio.gather(
            *(claim([store, other][i % 2], b.id) for i, b in enumerate(queued))
        )
        assert results.count(True) == 2 and results.count(False) == 10
        started = [b.id for b, r in zip(queued, results, strict=True) if r]
        for build_id in started:
            got = await store.get_build(build_id)
            assert got is not None and got.status == "starting"
        # a claimed (or cancelled) build is no longer queued: None, whatever the slots
        assert await claim(store, started[0], limit=99) is None
        await store.update_build(queued[-1].id, status="cancelled")
        assert await claim(other, queued[-1].id, limit=0) is None
        # another owner's slots are their own
        assert await store.claim_slot(
            bobs.id, owner="bob", limit=1, busy_statuses=busy, to_status="starting"
        )

    run(main())


def test_active_builds_cancel_requests_and_heartbeat(
    store: Store, make_build: MakeBuild, run: Run
) -> None:
    beat = datetime(2025, 6, 1, tzinfo=UTC)

    async def main() -> None:
        running = await make_build(status="running", runner_id="me")
        starting = await make_build(status="starting", runner_id="me")
        done = await make_build(status="succeeded", runner_id="me")
        elsewhere = await make_build(status="running", runner_id="other")
        queued = await make_build(owner="bob", status="queued")

        active = await store.active_builds(ACTIVE_STATUSES)
        assert [b.id for b in active] == [running.id, starting.id, elsewhere.id, queued.id]
        assert all(b.spec == {} for b in active), "the spec is left in the database"
        assert active[0].runner_id == "me" and active[0].status == "running"

        await store.update_build(running.id, cancel_requested=True)
        await store.update_build(done.id, cancel_requested=True)
        await store.update_build(elsewhere.id, cancel_requested=True)
        assert await store.cancel_requests("me") == [running.id]
        assert (await store.get_build(running.id)).cancel_requested is True  # type: ignore[union-attr]

        await store.heartbeat("me", beat)
        beats = {b.id: b.heartbeat_at for b in await store.list_builds("alice", limit=10)}
        assert beats == {running.id: beat, starting.id: beat, done.id: None, elsewhere.id: None}

    run(main())


def test_ping_and_a_database_that_is_down(store: Store, run: Run) -> None:
    run(store.ping())
    down = Store(make_engine("postgresql://postgres@127.0.0.1:1/nothing"))
    try:
        # An unreachable server is an SQLAlchemy error too (not a bare OSError), so the
        # caller's retry-with-backoff catches one family of exceptions.
        with pytest.raises(OperationalError):
            run(down.ping())
        with pytest.raises(OperationalError):
            run(down.get_build("x"))
    finally:
        run(down.dispose())


def test_lazy_store_does_no_io_until_connect(db_url: str, run: Run) -> None:
    """``initialize_settings`` builds a Store; only the start hook may reach the database."""
    down = Store.lazy("postgresql://postgres@127.0.0.1:1/nothing")  # nothing listens there
    run(down.dispose())

    store = Store.lazy(db_url)
    try:
        with pytest.raises(Exception, match="builds"):
            run(store.get_build("x"))  # no schema yet
        run(store.connect())
        run(store.connect())
        assert run(store.get_build("x")) is None
    finally:
        run(store.dispose())

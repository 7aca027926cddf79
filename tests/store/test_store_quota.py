"""repository.py, quotas: a rate limit every server sharing the database enforces together."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from jupyter_agentbuild.store import BuildRow, Store
from jupyter_agentbuild.store.schema import quota_uses

Run = Callable[[Awaitable[Any]], Any]
T0 = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def uses(store: Store, owner: str) -> int:
    async with store.engine.connect() as conn:
        count = await conn.scalar(
            select(func.count()).select_from(quota_uses).where(quota_uses.c.owner == owner)
        )
    return int(count or 0)


def test_limit_uses_then_retry_after_until_the_oldest_expires(store: Store, run: Run) -> None:
    async def main() -> None:
        q = store.consume_quota
        for t in (0, 10, 20):
            assert await q("alice", now=at(t), window=60, limit=3) is None
        assert await q("alice", now=at(30), window=60, limit=3) == pytest.approx(30.0)
        assert await q("alice", now=at(59.5), window=60, limit=3) == 1.0  # never below 1 s
        assert await q("bob", now=at(30), window=60, limit=3) is None  # per owner
        # At 60 s the use from 0 s has left the window (it is (now - window, now]).
        assert await q("alice", now=at(60), window=60, limit=3) is None
        assert await q("alice", now=at(61), window=60, limit=3) == pytest.approx(9.0)
        # Refusals record nothing, and expired uses were pruned: 10, 20, 60 remain.
        assert await uses(store, "alice") == 3

    run(main())


def test_retry_after_when_the_limit_was_lowered(store: Store, run: Run) -> None:
    """With 4 uses and a new limit of 2, a slot opens when the 3rd oldest expires."""

    async def main() -> None:
        for t in (0, 1, 2, 3):
            assert await store.consume_quota("alice", now=at(t), window=100, limit=4) is None
        retry = await store.consume_quota("alice", now=at(10), window=100, limit=2)
        assert retry == pytest.approx(92.0)

    run(main())


def test_deleting_builds_gives_no_budget_back(
    store: Store, make_build: Callable[..., Awaitable[BuildRow]], run: Run
) -> None:
    async def main() -> None:
        for _ in range(2):
            assert await store.consume_quota("alice", now=T0, window=60, limit=2) is None
            await store.delete_build((await make_build()).id)
        assert await store.consume_quota("alice", now=T0, window=60, limit=2) is not None

    run(main())


def test_quota_arguments_are_checked(store: Store, run: Run) -> None:
    with pytest.raises(ValueError):
        run(store.consume_quota("alice", now=T0, window=60, limit=0))
    with pytest.raises(ValueError):
        run(store.consume_quota("alice", now=T0, window=0, limit=1))


def test_concurrent_consumers_never_exceed_the_limit(
    store: Store, open_store: Callable[[], Store], run: Run
) -> None:
    """Many tasks on one Store, and two Stores with their own engines (two servers)."""
    other = open_store()

    async def main() -> None:
        one = await asyncio.gather(
            *(store.consume_quota("alice", now=at(i / 100), window=60, limit=7) for i in range(40))
        )
        assert [r is None for r in one].count(True) == 7
        assert all(r is None or r >= 1 for r in one)

        two = await asyncio.gather(
            *(
                s.consume_quota("bob", now=at(i / 100), window=60, limit=9)
                for i in range(30)
                for s in (store, other)
            )
        )
        assert [r is None for r in two].count(True) == 9
        assert await uses(store, "alice") == 7 and await uses(store, "bob") == 9

    run(main())

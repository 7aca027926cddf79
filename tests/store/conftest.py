"""Fixtures for the store tests: every test runs on SQLite and on PostgreSQL.

Each test gets a fresh database (a file in tmp_path, or a new PostgreSQL database) and
its own event loop (``asyncio.Runner``), independent of the server tests' loop.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from jupyter_agentbuild.store import BuildRow, Store
from tests.pg import PG_ADMIN_URL, postgres_url  # noqa: F401  (fixture)

T = TypeVar("T")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db/agentbuild.sqlite"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def run() -> Iterator[Callable[[Awaitable[T]], T]]:
    """Run a coroutine to completion on this test's own event loop."""
    with asyncio.Runner() as runner:

        def _run(awaitable: Awaitable[T]) -> T:
            async def main() -> T:
                return await awaitable

            return runner.run(main())

        yield _run


@pytest.fixture
def open_store(db_url: str, run: Callable[[Awaitable[Any]], Any]) -> Iterator[Callable[[], Store]]:
    """Open (and migrate) another Store on the test's database; all closed at teardown."""
    opened: list[Store] = []

    def _open() -> Store:
        store: Store = run(Store.open(db_url))
        opened.append(store)
        return store

    yield _open
    for store in opened:
        run(store.dispose())


@pytest.fixture
def store(open_store: Callable[[], Store]) -> Store:
    """A migrated Store on a fresh database."""
    return open_store()


T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
MakeBuild = Callable[..., Awaitable[BuildRow]]


@pytest.fixture
def make_build(store: Store) -> MakeBuild:
    """``await make_build(owner=..., status=..., **columns)``: insert a build, return its row."""
    counter = itertools.count(1)

    async def _make(owner: str = "alice", status: str = "queued", **fields: Any) -> BuildRow:
        n = next(counter)
        row = await store.insert_build(
            id=f"b{n:04d}{uuid.uuid4().hex[:8]}",
            owner=owner,
            name=f"build {n}",
            status=status,
            provider="local",
            spec={"steps": ["true"], "n": n},
            created_at=T0 + timedelta(seconds=n),
        )
        if fields:
            await store.update_build(row.id, **fields)
            got = await store.get_build(row.id)
            assert got is not None
            row = got
        return row

    return _make

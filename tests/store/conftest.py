"""Fixtures for the store tests: every test runs on SQLite and on PostgreSQL.

Each test gets a fresh database (a file in tmp_path, or a new PostgreSQL database) and
its own event loop (``asyncio.Runner``), independent of the server tests' loop.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import URL, make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from jupyter_agentbuild.store import BuildRow, Store

T = TypeVar("T")

#: The PostgreSQL server's maintenance database; tests create and drop their own beside it.
PG_ADMIN_URL = os.environ.get(
    "AGENTBUILD_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
_pg_error: list[str | None] = []


async def _pg_admin(*statements: str) -> None:
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


def _require_postgres() -> None:
    """Skip when PostgreSQL is unreachable, except on CI (CI=true), where that fails."""
    if not _pg_error:
        try:
            asyncio.run(asyncio.wait_for(_pg_admin("SELECT 1"), 10))
            _pg_error.append(None)
        except Exception as exc:
            _pg_error.append(f"{type(exc).__name__}: {exc}")
    if _pg_error[0] is not None:
        message = f"PostgreSQL at {PG_ADMIN_URL} unreachable ({_pg_error[0]})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    _require_postgres()
    name = f"agentbuild_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        url: URL = make_url(PG_ADMIN_URL).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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

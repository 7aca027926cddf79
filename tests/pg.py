"""PostgreSQL for tests: a fresh database per test, skipped when unreachable (except on CI)."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
from sqlalchemy import URL, make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

#: The PostgreSQL server's maintenance database; tests create and drop their own beside it.
PG_ADMIN_URL = os.environ.get(
    "AGENTBUILD_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
_pg_error: list[str | None] = []


def run_in_thread(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on a private loop in a thread, leaving the caller's loop alone."""
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            # called from sync fixtures, maybe while a loop runs: a thread with its own loop
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


async def pg_admin(*statements: str) -> None:
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


def require_postgres() -> None:
    """Skip when PostgreSQL is unreachable, except on CI (CI=true), where that fails."""
    if not _pg_error:
        try:
            run_in_thread(asyncio.wait_for(pg_admin("SELECT 1"), 10))
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
    require_postgres()
    name = f"agentbuild_test_{uuid.uuid4().hex[:12]}"
    run_in_thread(pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        url: URL = make_url(PG_ADMIN_URL).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        run_in_thread(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

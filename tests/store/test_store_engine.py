"""engine.py: URL normalization, redaction, and the per-connection SQLite settings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ArgumentError

from jupyter_agentbuild.store import make_engine, redact_url
from jupyter_agentbuild.store.engine import normalize_url, transaction


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite"),
        ("postgresql://u@h/db", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg"),
        ("postgresql+psycopg2://u@h/db", "postgresql+asyncpg"),
        ("postgres://u@h/db", "postgresql+asyncpg"),
    ],
)
def test_normalize_url_picks_the_async_driver(given: str, driver: str) -> None:
    url = normalize_url(given)
    assert url.drivername == driver
    assert url.database == normalize_url(given).database


@pytest.mark.parametrize("given", ["mysql://u@h/db", "sqlite+pysqlcipher:///x.db"])
def test_normalize_url_rejects_unsupported_backends(given: str) -> None:
    with pytest.raises(ArgumentError):
        normalize_url(given)


@pytest.mark.parametrize("given", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_sqlite_is_refused(given: str) -> None:
    with pytest.raises(ArgumentError, match="in-memory"):
        make_engine(given)


async def test_sqlite_path_may_start_with_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    engine = make_engine("sqlite:///~/deep/agentbuild.sqlite")
    assert engine.url.database == str(tmp_path / "deep" / "agentbuild.sqlite")
    assert (tmp_path / "deep").is_dir()
    await engine.dispose()


def test_redact_url_hides_the_password() -> None:
    shown = redact_url("postgresql+asyncpg://hub:s3cr3t@db.example:5432/jupyterhub")
    assert "s3cr3t" not in shown
    assert shown == "postgresql+asyncpg://hub:***@db.example:5432/jupyterhub"
    assert redact_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    # Even a URL SQLAlchemy cannot parse keeps its password out of the logs.
    assert "s3cr3t" not in redact_url("not a url://hub:s3cr3t@host/db")


async def test_sqlite_engine_creates_the_directory_and_sets_pragmas_on_every_connection(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a" / "b" / "agentbuild.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    results: list[tuple[object, ...]] = []
    try:
        # Two connections open at once: both must have been set up, not just the first.
        async with engine.connect() as c1, engine.connect() as c2:
            for conn in (c1, c2):
                row = []
                for pragma in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys"):
                    row.append((await conn.execute(text(f"PRAGMA {pragma}"))).scalar())
                results.append(tuple(row))
    finally:
        await engine.dispose()
    assert path.parent.is_dir()
    # synchronous=NORMAL is 1.
    assert results == [("wal", 1, 30000, 1)] * 2


async def test_postgres_engine_pings_pooled_connections() -> None:
    engine = make_engine("postgresql://u@127.0.0.1:1/db")  # creating it does not connect
    assert engine.dialect.driver == "asyncpg"
    assert engine.pool._pre_ping  # type: ignore[attr-defined]
    await engine.dispose()


async def test_sqlite_immediate_transaction_holds_the_write_lock_from_begin(tmp_path: Path) -> None:
    """A read-then-write transaction must keep others from reading before it writes."""

    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite")
    order: list[str] = []
    first_has_read = asyncio.Event()

    async def first() -> None:
        async with transaction(engine, immediate=True) as conn:
            await conn.execute(text("SELECT 1"))
            first_has_read.set()
            await asyncio.sleep(0.3)
            order.append("first commits")

    async def second() -> None:
        await first_has_read.wait()
        async with transaction(engine, immediate=True) as conn:
            await conn.execute(text("SELECT 1"))
            order.append("second reads")

    try:
        await asyncio.gather(first(), second())
    finally:
        await engine.dispose()
    assert order == ["first commits", "second reads"]

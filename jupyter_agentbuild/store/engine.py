"""Make the async engine for a ``db_url``: one place that knows each backend's settings.

Users write the URL they know (``sqlite:///~/x.db``, ``postgresql://...``); the server is
async, so the sync-looking forms are mapped to the async drivers here instead of failing.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, event, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

#: Execution option naming the connection whose next transaction must start with
#: ``BEGIN IMMEDIATE`` (SQLite): it takes the write lock first, so a read-then-write
#: transaction cannot be interleaved with another writer's.
BEGIN_IMMEDIATE = "agentbuild_begin_immediate"

_SYNC_PG_DRIVERS = {"", "psycopg2", "pg8000"}
#: Set on every connection, after WAL mode (see _use_wal).
_SQLITE_PRAGMAS = (
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
#: How often (10 ms apart) a connection tries to switch a fresh file to WAL.
_WAL_ATTEMPTS = 300


def normalize_url(db_url: str | URL) -> URL:
    """The async-driver form of ``db_url`` (``sqlite+aiosqlite``, ``postgresql+asyncpg``)."""
    url = make_url(db_url)
    backend, _, driver = url.drivername.partition("+")
    if backend == "sqlite":
        if driver not in ("", "aiosqlite"):
            raise ArgumentError(f"unsupported SQLite driver {driver!r}: use sqlite+aiosqlite")
        return url.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        if driver in _SYNC_PG_DRIVERS:
            return url.set(drivername="postgresql+asyncpg")
        return url.set(drivername=f"postgresql+{driver}")
    raise ArgumentError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def redact_url(url: str | URL) -> str:
    """``url`` with any password replaced by ``***``: safe for logs and error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        # Not parseable: still hide whatever sits between "user:" and "@".
        return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", str(url))


def make_engine(db_url: str | URL) -> AsyncEngine:
    """An :class:`AsyncEngine` for ``db_url`` with the backend's settings applied."""
    url = normalize_url(db_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    return create_async_engine(url, pool_pre_ping=True)


@asynccontextmanager
async def transaction(
    engine: AsyncEngine, *, immediate: bool = False
) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction, committed on success, rolled back on error.

    ``immediate`` makes SQLite take the write lock at BEGIN, for read-then-write work
    (count, then insert): with a deferred BEGIN two connections could both read before
    either writes. (PostgreSQL callers take their own locks.)

    A database that cannot be reached surfaces from asyncpg as a bare ``OSError`` or
    ``TimeoutError``; it is re-raised as SQLAlchemy's ``OperationalError`` so callers
    retry on one family of exceptions: ``sqlalchemy.exc.SQLAlchemyError``.
    """
    try:
        async with engine.connect() as conn:
            if immediate and conn.dialect.name == "sqlite":
                await conn.execution_options(**{BEGIN_IMMEDIATE: True})
            async with conn.begin():
                yield conn
    except (OSError, TimeoutError) as err:
        raise OperationalError(None, None, err) from err


def _use_wal(cursor: Any) -> None:
    """Put the database file in WAL mode (readers never block the writer).

    The switch needs a lock that ``busy_timeout`` does not wait for: servers opening a
    fresh file together get "database is locked" (about one start in ten with four).
    WAL is a property of the file, so another connection's switch counts; otherwise try
    again, 10 ms apart (this blocks the event loop, only in that start-up race).
    """
    for _ in range(_WAL_ATTEMPTS):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")  # answers the mode now in force
        except Exception as exc:  # the driver's OperationalError
            if "database is locked" not in str(exc):
                raise
            cursor.execute("PRAGMA journal_mode")
        if str(cursor.fetchone()[0]).lower() == "wal":
            return
        time.sleep(0.01)
    raise OperationalError("PRAGMA journal_mode=WAL", None, Exception("the file stays locked"))


def _private_file(path: Path) -> None:
    """The database holds every build's spec and logs: only the server's user may read
    it. A new directory is made 0700 and the file 0600 before SQLite opens it (SQLite
    gives its WAL and shared-memory files the database file's mode); an existing file
    (and its WAL) is narrowed to 0600."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(OSError):
            if name.stat().st_mode & 0o077:
                name.chmod(0o600)


def _sqlite_url(url: URL) -> URL:
    """``url`` checked (a file, not memory) with its file made private."""
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory":
        # One shared connection would mix concurrent transactions; one per connection
        # would each be a different, empty database. A file in a temp dir works for tests.
        raise ArgumentError("in-memory SQLite is not supported: give the path of a file")
    if not url.query.get("uri"):
        path = Path(database).expanduser()
        _private_file(path)
        url = url.set(database=str(path))
    return url


def _sqlite_engine(url: URL) -> AsyncEngine:
    engine = create_async_engine(_sqlite_url(url))
    _configure_sqlite(engine.sync_engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    """Every SQLite connection's settings: busy timeout, WAL, pragmas, our own BEGIN."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy emit BEGIN itself (see _on_begin): the sqlite3 module's legacy
        # transaction control skips BEGIN before SELECT and DDL, which breaks
        # read-then-write atomicity and transactional migrations.
        dbapi_conn.isolation_level = None  # type: ignore[attr-defined]
        cursor = dbapi_conn.cursor()
        try:
            # busy_timeout first: every later lock waits instead of failing at once
            cursor.execute("PRAGMA busy_timeout=30000")
            _use_wal(cursor)
            for pragma in _SQLITE_PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(BEGIN_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

"""Bring the database schema to the newest revision at server start-up (an existing
SQLite database is copied first: see :func:`upgrade`).

Alembic runs in-process on a connection we own, with its config built here, so nothing
(no alembic.ini, no working directory) is needed at run time besides the package itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import transaction
from .locks import MIGRATION, locked_transaction

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's config for the package's migrations, optionally bound to ``connection``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    """The newest revision the package ships."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    async with transaction(engine) as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def upgrade(engine: AsyncEngine) -> Path | None:
    """``alembic upgrade head`` in one transaction; a no-op when already at head.

    The policy (docs/migrations.md): migrations run automatically at start-up, and an
    existing SQLite database that is behind is first copied next to itself
    (:func:`backup_sqlite`): a failed or unwanted upgrade can be undone by putting the
    copy back. Returns the copy's path, if one was made. (PostgreSQL deployments back up
    with their own tools; the upgrade there is one transaction, rolled back on failure.)

    The transaction is serialized across servers (:func:`.locks.locked_transaction`): the
    later ones find the schema at head and do nothing.
    """
    head = head_revision()
    current = await current_revision(engine)
    if current == head:
        return None
    backup = None
    # (a file given as a URI, ``?uri=true``, is for tests and tools: no copy)
    if current is not None and engine.dialect.name == "sqlite" and not engine.url.query.get("uri"):
        backup = await asyncio.to_thread(backup_sqlite, engine.url, current)
        log.warning(
            "agentbuild: the database is at schema revision %s; a copy was made at %s "
            "before upgrading it to %s",
            current,
            backup,
            head,
        )
    async with locked_transaction(engine, MIGRATION) as conn:
        await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "head"))
    return backup


def backup_sqlite(url: URL, revision: str) -> Path:
    """Copy the SQLite database at ``url`` to ``<file>.<revision>.bak`` (a timestamp is
    added if that exists), private to the server's user like the database, with SQLite's
    backup API: a consistent copy even while other servers write."""
    source = Path(url.database or "").expanduser()
    target = source.with_name(f"{source.name}.{revision}.bak")
    if target.exists():
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = source.with_name(f"{source.name}.{revision}.{stamp}.bak")
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return target

"""Bring the database schema to the newest revision at server start-up.

Alembic runs in-process on a connection we own, with its config built here, so nothing
(no alembic.ini, no working directory) is needed at run time besides the package itself.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import transaction

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: pg_advisory_xact_lock(class, key) namespace for this module: servers starting together
#: migrate one after the other; the later ones find the schema at head and do nothing.
_MIGRATE_LOCK = (0x61620002, 0)


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


async def upgrade(engine: AsyncEngine) -> None:
    """``alembic upgrade head`` in one transaction; a no-op when already at head.

    The transaction is serialized across servers: an advisory lock on PostgreSQL, the write
    lock (BEGIN IMMEDIATE) on SQLite.
    """
    async with transaction(engine, immediate=True) as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:cls, :key)"),
                {"cls": _MIGRATE_LOCK[0], "key": _MIGRATE_LOCK[1]},
            )
        await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "head"))

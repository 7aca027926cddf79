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
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import transaction
from .locks import MIGRATION, locked_transaction

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


async def upgrade(engine: AsyncEngine) -> None:
    """``alembic upgrade head`` in one transaction; a no-op when already at head.

    The transaction is serialized across servers (:func:`.locks.locked_transaction`): the
    later ones find the schema at head and do nothing.
    """
    async with locked_transaction(engine, MIGRATION) as conn:
        await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "head"))

"""migrate.py: the schema comes from the package's hand-written Alembic revisions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from jupyter_agentbuild.store import Store, make_engine, upgrade
from jupyter_agentbuild.store.migrate import (
    MIGRATIONS_DIR,
    alembic_config,
    current_revision,
    head_revision,
)
from jupyter_agentbuild.store.schema import metadata

Run = Callable[[Awaitable[Any]], Any]


def test_the_package_ships_its_migrations() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert head_revision() == "0003"


def test_upgrade_creates_the_schema_and_is_idempotent(db_url: str, run: Run) -> None:
    async def main() -> None:
        engine = make_engine(db_url)
        try:
            assert await current_revision(engine) is None
            await upgrade(engine)
            await upgrade(engine)  # second call: a no-op, not an error
            assert await current_revision(engine) == head_revision()
            async with engine.connect() as conn:
                tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
                versions = (await conn.execute(text("SELECT * FROM alembic_version"))).all()
            assert tables == {
                "alembic_version",
                "builds",
                "entry_chunks",
                "quota_uses",
                "artifact_sets",
                "artifact_files",
            }
            assert len(versions) == 1
        finally:
            await engine.dispose()

    run(main())


def test_migrated_schema_matches_schema_py(store: Store, run: Run) -> None:
    """The hand-written revision and the metadata the code queries must not drift apart."""

    def diff(conn: Any) -> list[Any]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, metadata))

    async def main() -> list[Any]:
        async with store.engine.connect() as conn:
            return list(await conn.run_sync(diff))

    assert run(main()) == []


def test_servers_starting_together_migrate_once(db_url: str, run: Run) -> None:
    """Several engines (as several servers would) upgrading a fresh database at once."""

    async def main() -> None:
        engines = [make_engine(db_url) for _ in range(4)]
        try:
            await asyncio.gather(*(upgrade(engine) for engine in engines))
            assert await current_revision(engines[0]) == head_revision()
        finally:
            for engine in engines:
                await engine.dispose()

    run(main())


def test_downgrade_to_base_then_upgrade_again(store: Store, run: Run) -> None:
    """The revision's downgrade works, so a bad release can be rolled back by hand."""

    async def main() -> set[str]:
        async with store.engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "base"))
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert await current_revision(store.engine) is None
        await upgrade(store.engine)
        assert await current_revision(store.engine) == head_revision()
        return tables

    assert run(main()) == {"alembic_version"}


def test_an_old_sqlite_database_is_copied_before_its_upgrade(tmp_path: Any, run: Run) -> None:
    """Automatic upgrades at start-up, with a way back: the copy is at the old revision,
    holds the old data, and is private like the database; a new or current database
    gets no copy."""
    import sqlite3

    path = tmp_path / "old.db"

    async def main() -> None:
        engine = make_engine(f"sqlite:///{path}")
        try:
            async with engine.begin() as conn:
                await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0002"))
                await conn.execute(
                    text(
                        "INSERT INTO builds (id, owner, status, provider, spec, created_at,"
                        " last_seq, cancel_requested) VALUES ('b1', 'o', 'succeeded', 'local',"
                        " '{}', '2026-01-01 00:00:00', 0, 0)"
                    )
                )
            backup = await upgrade(engine)
            assert backup is not None and backup.name == "old.db.0002.bak"
            assert await current_revision(engine) == head_revision()
            assert await upgrade(engine) is None  # at head: nothing to copy
            again = make_engine(f"sqlite:///{tmp_path / 'new.db'}")
            assert await upgrade(again) is None  # a new database: nothing to keep
            await again.dispose()
        finally:
            await engine.dispose()
        assert backup.stat().st_mode & 0o777 == 0o600
        with sqlite3.connect(backup) as copy:
            assert copy.execute("SELECT version_num FROM alembic_version").fetchall() == [("0002",)]
            assert copy.execute("SELECT id FROM builds").fetchall() == [("b1",)]

    run(main())

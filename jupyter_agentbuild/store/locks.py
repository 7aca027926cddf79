"""Transactions serialized across servers sharing a database, one lock per purpose.

On PostgreSQL an advisory transaction lock ``(namespace, key)``, released at commit or
rollback; on SQLite the database's write lock, taken at ``BEGIN IMMEDIATE``. Both make
read-then-write work (count, then claim) atomic between servers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .engine import transaction

#: One owner's quota check and use.
QUOTA = 0x61620001
#: Schema migrations: servers starting together migrate one after the other.
MIGRATION = 0x61620002
#: One owner's build slots (count running builds, then claim one).
SLOT = 0x61620003


@asynccontextmanager
async def locked_transaction(
    engine: AsyncEngine, namespace: int, key: str | None = None
) -> AsyncIterator[AsyncConnection]:
    """:func:`transaction` holding the lock ``namespace`` for ``key`` (an owner; None:
    the one lock of the namespace) until it ends."""
    async with transaction(engine, immediate=True) as conn:
        if conn.dialect.name == "postgresql":
            if key is None:
                lock = text("SELECT pg_advisory_xact_lock(:cls, 0)")
            else:
                lock = text("SELECT pg_advisory_xact_lock(:cls, hashtext(:key))")
            await conn.execute(lock, {"cls": namespace, "key": key})
        yield conn


__all__ = ["MIGRATION", "QUOTA", "SLOT", "locked_transaction"]

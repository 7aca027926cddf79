"""Rate limits shared by every server on the database: uses counted in a sliding window."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import locks
from .locks import locked_transaction
from .schema import quota_uses


class Quotas:
    """The quota queries of :class:`~.repository.Store`."""

    engine: AsyncEngine

    async def consume_quota(
        self, owner: str, *, now: datetime, window: float, limit: int
    ) -> float | None:
        """Record one use for ``owner`` if fewer than ``limit`` fall in the last ``window``
        seconds, and return None; otherwise record nothing and return the seconds (>= 1)
        until a use leaves the window.

        Check and insert happen under one per-owner lock (an advisory lock on PostgreSQL,
        the write lock on SQLite), so servers sharing the database never let more than
        ``limit`` through together. Uses stamped later than ``now`` (another server's clock
        running ahead) still count. Expired uses of ``owner`` are deleted on the way.
        """
        if limit < 1 or window <= 0:
            raise ValueError("consume_quota needs limit >= 1 and window > 0")
        cutoff = now - timedelta(seconds=window)
        mine = quota_uses.c.owner == owner
        in_window = and_(mine, quota_uses.c.created_at > cutoff)
        async with locked_transaction(self.engine, locks.QUOTA, owner) as conn:
            await conn.execute(delete(quota_uses).where(mine, quota_uses.c.created_at <= cutoff))
            used = int(
                await conn.scalar(select(func.count()).select_from(quota_uses).where(in_window))
                or 0
            )
            if used < limit:
                await conn.execute(insert(quota_uses).values(owner=owner, created_at=now))
                return None
            # A slot opens when the count drops below limit: when the (used - limit + 1)th
            # oldest use expires (the oldest, unless the limit was lowered meanwhile).
            frees_at = await _nth_oldest_use(conn, in_window, used - limit)
        return max(1.0, (frees_at + timedelta(seconds=window) - now).total_seconds())


async def _nth_oldest_use(conn: AsyncConnection, where: Any, n: int) -> datetime:
    stmt = (
        select(quota_uses.c.created_at)
        .where(where)
        .order_by(quota_uses.c.created_at)
        .offset(n)
        .limit(1)
    )
    value: datetime = (await conn.execute(stmt)).scalar_one()
    return value


__all__ = ["Quotas"]

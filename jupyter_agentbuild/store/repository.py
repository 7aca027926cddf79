"""``Store``: every query on builds, their entry stream and quotas (the last two in
entry_stream.py and quotas.py, its parts). Outside the store package nothing writes SQL;
inside it, artifacts.py has the artifact records' queries, migrate.py and its revisions the
schema's, notify.py PostgreSQL's NOTIFY, engine.py and locks.py the connection settings
and locks.

SQLAlchemy Core throughout (no ORM unit of work: the log stream is the hot path).
Database errors propagate as SQLAlchemy exceptions; the caller decides how to retry.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from sqlalchemy import (
    Row,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from traitlets import Unicode, default
from traitlets.config import LoggingConfigurable

from ..vocabulary import ACTIVE, BuildStatus
from . import locks
from .engine import make_engine, transaction
from .entry_stream import EntryStream, SeqConflict, advance_stream, chunk_rows
from .locks import locked_transaction
from .migrate import upgrade
from .notify import Notifier, notify
from .quotas import Quotas
from .rows import BuildRow
from .schema import builds, entry_chunks

__all__ = ["BuildRow", "SeqConflict", "Store"]

#: Columns update_build/transition may set (pk and id identify the row; never rewritten).
_UPDATABLE = frozenset(builds.c.keys()) - {"pk", "id"}


class Store(EntryStream, Quotas, LoggingConfigurable):
    """Async access to builds, their entry stream and quotas, on SQLite or PostgreSQL."""

    db_url = Unicode(
        help="""SQLAlchemy URL of the build database. Default: a SQLite file (WAL mode)
        in the Jupyter data dir. Use postgresql+asyncpg://... to share builds, quotas and live
        logs between servers. Env fallback: AGENTBUILD_DB_URL.""",
    ).tag(config=True)

    @default("db_url")
    def _db_url_default(self) -> str:
        env = os.environ.get("AGENTBUILD_DB_URL")
        if env:
            return env
        return f"sqlite+aiosqlite:///{Path(jupyter_data_dir()) / 'agentbuild' / 'agentbuild.db'}"

    def __init__(self, engine: AsyncEngine | None = None, **kwargs: Any) -> None:
        """A Store on ``engine``, or else on an engine for ``db_url``: no I/O happens
        here (call :meth:`connect` before using it)."""
        super().__init__(**kwargs)
        self.engine = engine if engine is not None else make_engine(self.db_url)
        #: Wakes readers when another server stores entries (PostgreSQL only).
        self.notifier = Notifier(self.engine)

    @classmethod
    def lazy(cls, db_url: str) -> Store:
        """A Store for ``db_url`` that has not talked to the database yet: for set-up code
        that must not do I/O. Call :meth:`connect` before using it."""
        return cls(db_url=db_url)

    @classmethod
    async def open(cls, db_url: str) -> Store:
        """Make the engine for ``db_url`` and migrate the schema to head."""
        store = cls.lazy(db_url)
        try:
            await store.connect()
        except BaseException:
            await store.dispose()
            raise
        return store

    async def connect(self) -> None:
        """Migrate the schema to head (a no-op when it is there already), then listen."""
        await upgrade(self.engine)
        await self.notifier.start()

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    async def ping(self) -> None:
        """Raise if the database cannot answer ``SELECT 1``."""
        async with transaction(self.engine) as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.notifier.stop()
        await self.engine.dispose()

    # -- builds -------------------------------------------------------------------------

    async def insert_build(
        self,
        *,
        id: str,
        owner: str,
        name: str | None,
        status: str,
        provider: str,
        spec: dict[str, Any],
        created_at: datetime,
        **fields: Any,
    ) -> BuildRow:
        """Insert a new build and return its row. ``fields`` may set other columns at once
        (e.g. ``runner_id``: the server that will run it); the rest start unset."""
        stmt = (
            insert(builds)
            .values(
                id=id,
                owner=owner,
                name=name,
                status=status,
                provider=provider,
                spec=spec,
                created_at=created_at,
                **_checked(fields),
            )
            .returning(*builds.c)
        )
        async with transaction(self.engine) as conn:
            row = (await conn.execute(stmt)).one()
        return _build_row(row)

    async def get_build(self, build_id: str, owner: str | None = None) -> BuildRow | None:
        """The build, or None; with ``owner``, None also when someone else owns it."""
        stmt = select(builds).where(builds.c.id == build_id)
        if owner is not None:
            stmt = stmt.where(builds.c.owner == owner)
        async with transaction(self.engine) as conn:
            row = (await conn.execute(stmt)).one_or_none()
        return None if row is None else _build_row(row)

    async def build_progress(self, build_id: str) -> tuple[str, int] | None:
        """``(status, last_seq)``, or None: what a stream reader polls, without the row's
        JSON columns (the spec can hold megabytes of inline files)."""
        stmt = select(builds.c.status, builds.c.last_seq).where(builds.c.id == build_id)
        async with transaction(self.engine) as conn:
            row = (await conn.execute(stmt)).one_or_none()
        return None if row is None else (str(row[0]), int(row[1]))

    async def list_builds(
        self,
        owner: str,
        *,
        statuses: Sequence[str] | None = None,
        limit: int,
        before: int | None = None,
        search: str | None = None,
        spec: Callable[[Any], Any] | None = None,
    ) -> list[BuildRow]:
        """``owner``'s builds, newest first by ``pk``; ``before`` (a pk) pages backwards;
        ``search`` keeps those whose name or id contains it, ignoring case (SQLite folds
        ASCII letters only), its ``%`` and ``_`` taken literally.

        With ``spec``, each row's spec is replaced by ``spec(its spec)``, and specs are read
        a bounded number of bytes at a time (small ones together, each large one alone), so
        a page of builds with megabytes of inline files never holds them all at once."""
        if limit <= 0:
            return []
        columns: list[Any] = list(builds.c)
        if spec is not None:
            size = func.length(builds.c.spec).label("spec_size")
            columns = [c for c in builds.c if c.name != "spec"] + [size]
        stmt = select(*columns).where(builds.c.owner == owner)
        if statuses is not None:
            stmt = stmt.where(builds.c.status.in_(list(statuses)))
        if before is not None:
            stmt = stmt.where(builds.c.pk < before)
        if search:
            stmt = stmt.where(
                builds.c.name.icontains(search, autoescape=True)
                | builds.c.id.icontains(search, autoescape=True)
            )
        stmt = stmt.order_by(builds.c.pk.desc()).limit(limit)
        async with transaction(self.engine) as conn:
            rows = (await conn.execute(stmt)).all()
            if spec is None:
                return [_build_row(row) for row in rows]
            specs = await _read_specs(conn, rows, spec)
        return [
            BuildRow(
                **{k: v for k, v in row._mapping.items() if k != "spec_size"}, spec=specs[row.pk]
            )
            for row in rows
        ]

    async def active_builds(self, statuses: Sequence[str]) -> list[BuildRow]:
        """Every owner's builds in ``statuses``, oldest first, **without their spec**
        (``spec`` is ``{}``): reconciliation reads them on every heartbeat of every server,
        and a spec with inline files can hold megabytes."""
        columns = [column for column in builds.c if column.name != "spec"]
        stmt = select(*columns).where(builds.c.status.in_(list(statuses))).order_by(builds.c.pk)
        async with transaction(self.engine) as conn:
            rows = (await conn.execute(stmt)).all()
        return [BuildRow(**row._mapping, spec={}) for row in rows]

    async def leftover_sandboxes(self, *, host: str, statuses: Sequence[str]) -> list[BuildRow]:
        """Builds in ``statuses`` run on ``host`` that still record a sandbox (a preview's,
        or one nobody could reap from elsewhere), oldest first: start-up reaping."""
        stmt = (
            select(builds)
            .where(
                builds.c.status.in_(list(statuses)),
                builds.c.runner_host == host,
                builds.c.sandbox_state.is_not(None),
            )
            .order_by(builds.c.pk)
        )
        async with transaction(self.engine) as conn:
            rows = (await conn.execute(stmt)).all()
        return [_build_row(row) for row in rows]

    async def update_build(self, build_id: str, **fields: Any) -> bool:
        """Set columns of one build; returns whether it exists. JSON columns take dicts."""
        if not fields:
            return await self.get_build(build_id) is not None
        stmt = update(builds).where(builds.c.id == build_id).values(**_checked(fields))
        async with transaction(self.engine) as conn:
            changed = (await conn.execute(stmt)).rowcount == 1
            if changed and "status" in fields:
                await notify(conn, build_id)
            return changed

    async def transition(
        self,
        build_id: str,
        *,
        from_statuses: Sequence[str],
        to_status: str,
        **fields: Any,
    ) -> bool:
        """Move the build to ``to_status`` (and set ``fields``) only if its status is one of
        ``from_statuses``; returns whether it did. One conditional UPDATE, so of two servers
        claiming the same queued build exactly one wins."""
        stmt = (
            update(builds)
            .where(builds.c.id == build_id, builds.c.status.in_(list(from_statuses)))
            .values(status=to_status, **_checked(fields))
        )
        async with transaction(self.engine) as conn:
            return (await conn.execute(stmt)).rowcount == 1

    async def hand_over(self, build_id: str, *, held_by: str | None, **fields: Any) -> bool:
        """Set ``fields`` (the server columns) of a ``running`` build only if the server
        ``held_by`` (None: none) still holds it; returns whether it did. One conditional
        UPDATE, so of two servers taking over a dead one's build exactly one wins."""
        stmt = (
            update(builds)
            .where(
                builds.c.id == build_id,
                builds.c.status == BuildStatus.RUNNING,
                builds.c.runner_id == held_by,
            )
            .values(**_checked(fields))
        )
        async with transaction(self.engine) as conn:
            return (await conn.execute(stmt)).rowcount == 1

    async def end_with_entry(
        self,
        build_id: str,
        entry: tuple[int, str],
        *,
        from_statuses: Sequence[str],
        to_status: str,
        **fields: Any,
    ) -> bool:
        """:meth:`transition`, and append ``entry`` (``(seq, json)``, the next seq of the
        stream) in the same transaction: a reader never sees the terminal status without
        the entry that says so. False (nothing written) if the status is no longer one of
        ``from_statuses`` or the stream moved on (its writer is alive after all)."""
        seq, text_ = entry
        rows = chunk_rows(build_id, [(seq, [text_])])
        async with transaction(self.engine) as conn:
            return await advance_stream(
                conn,
                build_id,
                rows,
                builds.c.status.in_(list(from_statuses)),
                status=to_status,
                **_checked(fields),
            )

    async def claim_slot(
        self,
        build_id: str,
        *,
        owner: str,
        limit: int,
        busy_statuses: Sequence[str],
        to_status: str,
        **fields: Any,
    ) -> bool | None:
        """Move a ``queued`` build to ``to_status`` if fewer than ``limit`` of ``owner``'s
        builds are in ``busy_statuses``: True when claimed, False when every slot is taken,
        None when the build is no longer queued (cancelled, or claimed elsewhere).

        Count and claim happen under one per-owner lock (an advisory lock on PostgreSQL,
        the write lock on SQLite), so servers sharing the database never run more than
        ``limit`` of one owner's builds together.
        """
        async with locked_transaction(self.engine, locks.SLOT, owner) as conn:
            busy = await conn.scalar(
                select(func.count())
                .select_from(builds)
                .where(builds.c.owner == owner, builds.c.status.in_(list(busy_statuses)))
            )
            if int(busy or 0) >= limit:
                still_queued = await conn.scalar(
                    select(func.count())
                    .select_from(builds)
                    .where(builds.c.id == build_id, builds.c.status == BuildStatus.QUEUED)
                )
                return False if still_queued else None
            stmt = (
                update(builds)
                .where(builds.c.id == build_id, builds.c.status == BuildStatus.QUEUED)
                .values(status=to_status, **_checked(fields))
            )
            return True if (await conn.execute(stmt)).rowcount == 1 else None

    async def delete_build(self, build_id: str) -> bool:
        """Delete the build and its whole entry stream at once; returns whether it existed."""
        async with transaction(self.engine) as conn:
            await conn.execute(delete(entry_chunks).where(entry_chunks.c.build_id == build_id))
            result = await conn.execute(delete(builds).where(builds.c.id == build_id))
            return result.rowcount == 1

    async def heartbeat(self, server_id: str, now: datetime) -> None:
        """Mark every unfinished build run by the server ``server_id`` as alive at ``now``."""
        stmt = (
            update(builds)
            .where(builds.c.status.in_(ACTIVE), builds.c.runner_id == server_id)
            .values(heartbeat_at=now)
        )
        async with transaction(self.engine) as conn:
            await conn.execute(stmt)

    async def cancel_requests(self, server_id: str) -> list[str]:
        """Ids of the server ``server_id``'s unfinished builds that another server asked to cancel
        (``update_build(id, cancel_requested=True)``)."""
        stmt = (
            select(builds.c.id)
            .where(
                builds.c.status.in_(ACTIVE),
                builds.c.runner_id == server_id,
                builds.c.cancel_requested,
            )
            .order_by(builds.c.pk)
        )
        async with transaction(self.engine) as conn:
            return list((await conn.scalars(stmt)).all())

    async def preview_checkin(
        self, build_ids: Sequence[str], now: datetime
    ) -> dict[str, tuple[bool, str | None]]:
        """The heartbeat of a server's live previews: their rows' ``heartbeat_at`` becomes
        ``now`` (so other servers can tell when it died), and for each that still exists,
        ``(stop requested by another server?, the preview state recorded)``. An id
        missing from the answer was deleted, perhaps elsewhere."""
        if not build_ids:
            return {}
        beat = (
            update(builds)
            .where(builds.c.id.in_(list(build_ids)))
            .values(heartbeat_at=now)
            .returning(builds.c.id, builds.c.preview_stop_requested, builds.c.preview)
        )
        async with transaction(self.engine) as conn:
            return {
                str(bid): (bool(flag), (preview or {}).get("state"))
                for bid, flag, preview in await conn.execute(beat)
            }


#: Characters of specs read in one query when a list asks for them transformed.
_SPEC_BATCH = 4 * 1024 * 1024


async def _read_specs(
    conn: AsyncConnection, rows: Sequence[Row[Any]], transform: Callable[[Any], Any]
) -> dict[int, Any]:
    """``{pk: transform(spec)}`` for ``rows`` (which carry ``spec_size``), reading the
    specs in batches of at most ``_SPEC_BATCH`` characters (a larger one alone)."""
    out: dict[int, Any] = {}
    batch: list[int] = []
    total = 0

    async def flush() -> None:
        if batch:
            query = select(builds.c.pk, builds.c.spec).where(builds.c.pk.in_(batch))
            for pk, value in (await conn.execute(query)).all():
                out[pk] = transform(value)
            batch.clear()

    for row in rows:
        size = int(row.spec_size or 0)
        if batch and total + size > _SPEC_BATCH:
            await flush()
            total = 0
        batch.append(row.pk)
        total += size
    await flush()
    return out


def _build_row(row: Row[Any]) -> BuildRow:
    return BuildRow(**row._mapping)


def _checked(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable build columns: {sorted(unknown)}")
    return fields

"""``Store``: every query the extension makes, and the only module with SQL in it.

SQLAlchemy Core throughout (no ORM unit of work: the log stream is the hot path).
Database errors propagate as SQLAlchemy exceptions; the caller decides how to retry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Row,
    and_,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..textsize import size_of
from .engine import make_engine, transaction
from .migrate import upgrade
from .models import ACTIVE_STATUSES, BuildRow
from .notify import Notifier, notify
from .schema import builds, entry_chunks, quota_uses

__all__ = ["BuildRow", "SeqConflict", "Store"]

#: pg_advisory_xact_lock(class, hashtext(owner)): serializes one owner's quota checks.
_QUOTA_LOCK_CLASS = 0x61620001
#: pg_advisory_xact_lock(class, hashtext(owner)): serializes one owner's slot claims.
_SLOT_LOCK_CLASS = 0x61620003  # (0x61620002 is the migration lock, store/migrate.py)
#: seq columns are 32-bit INTEGER; bounds past this would overflow PostgreSQL's binds.
_MAX_SEQ = 2**31 - 1
#: Columns update_build/transition may set (pk and id identify the row; never rewritten).
_UPDATABLE = frozenset(builds.c.keys()) - {"pk", "id"}


class SeqConflict(RuntimeError):
    """Chunks that do not continue the build's stream exactly (gap, overlap, or no build).

    Not worth retrying: the writer's idea of ``last_seq`` is wrong.
    """


class Store:
    """Async access to builds, their entry stream and quotas, on SQLite or PostgreSQL."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        #: Wakes readers when another server stores entries (PostgreSQL only).
        self.notifier = Notifier(engine)

    @classmethod
    def lazy(cls, db_url: str) -> Store:
        """A Store for ``db_url`` that has not talked to the database yet: for set-up code
        that must not do I/O. Call :meth:`connect` before using it."""
        return cls(make_engine(db_url))

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
        rows = _chunk_rows(build_id, [(seq, [text_])])
        async with transaction(self.engine) as conn:
            return await _advance(
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
        async with transaction(self.engine, immediate=True) as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:cls, hashtext(:owner))"),
                    {"cls": _SLOT_LOCK_CLASS, "owner": owner},
                )
            busy = await conn.scalar(
                select(func.count())
                .select_from(builds)
                .where(builds.c.owner == owner, builds.c.status.in_(list(busy_statuses)))
            )
            if int(busy or 0) >= limit:
                still_queued = await conn.scalar(
                    select(func.count())
                    .select_from(builds)
                    .where(builds.c.id == build_id, builds.c.status == "queued")
                )
                return False if still_queued else None
            stmt = (
                update(builds)
                .where(builds.c.id == build_id, builds.c.status == "queued")
                .values(status=to_status, **_checked(fields))
            )
            return True if (await conn.execute(stmt)).rowcount == 1 else None

    async def delete_build(self, build_id: str) -> bool:
        """Delete the build and its whole entry stream at once; returns whether it existed."""
        async with transaction(self.engine) as conn:
            await conn.execute(delete(entry_chunks).where(entry_chunks.c.build_id == build_id))
            result = await conn.execute(delete(builds).where(builds.c.id == build_id))
            return result.rowcount == 1

    async def heartbeat(self, runner_id: str, now: datetime) -> None:
        """Mark every unfinished build run by ``runner_id`` as still alive at ``now``."""
        stmt = (
            update(builds)
            .where(builds.c.status.in_(ACTIVE_STATUSES), builds.c.runner_id == runner_id)
            .values(heartbeat_at=now)
        )
        async with transaction(self.engine) as conn:
            await conn.execute(stmt)

    async def cancel_requests(self, runner_id: str) -> list[str]:
        """Ids of ``runner_id``'s unfinished builds that another server asked to cancel
        (``update_build(id, cancel_requested=True)``)."""
        stmt = (
            select(builds.c.id)
            .where(
                builds.c.status.in_(ACTIVE_STATUSES),
                builds.c.runner_id == runner_id,
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

    # -- entry stream -------------------------------------------------------------------

    async def append_chunks(
        self, build_id: str, chunks: Sequence[tuple[int, Sequence[str]]]
    ) -> None:
        """Store chunks ``(first_seq, entries)`` and advance ``builds.last_seq``, atomically.

        The chunks must continue the stream exactly: the first starts at the build's
        ``last_seq + 1`` and each next one where the previous ended. The ``last_seq`` check
        is part of the UPDATE, so a gap or overlap is refused by the database itself
        (:class:`SeqConflict`), never stored. Re-sending chunks that are already stored
        (a retry after a commit whose outcome was lost) is accepted as a no-op.
        """
        rows = _chunk_rows(build_id, chunks)
        if not rows:
            return
        prev, new_last = rows[0]["first_seq"] - 1, rows[-1]["last_seq"]
        async with transaction(self.engine) as conn:
            if await _advance(conn, build_id, rows):
                return
            current = await conn.scalar(select(builds.c.last_seq).where(builds.c.id == build_id))
        if current is None:
            raise SeqConflict(f"build {build_id!r} does not exist")
        if current == new_last:
            return
        raise SeqConflict(
            f"build {build_id!r}: chunks start at seq {prev + 1}, stream is at {current}"
        )

    async def read_entries(
        self, build_id: str, *, after: int, limit: int, max_bytes: int | None = None
    ) -> list[str]:
        """The entries (JSON texts) with ``seq > after``, ascending, at most ``limit`` and,
        beyond the first, at most ``max_bytes`` (UTF-8) of them.

        Chunks are fetched a few at a time, only those that hold seqs ``after+1 ..
        after+limit``: both ends are seeks on the (build_id, last_seq) key, so the cost
        follows what is read, never the history before it, and a byte budget stops the
        reading early. Entry k of a chunk has seq ``first_seq + k``: the edge chunks are
        sliced without parsing any JSON.
        """
        out: list[str] = []
        budget = max_bytes
        async for first_seq, last, body in self._chunks_for(build_id, after, limit):
            start = max(0, after + 1 - first_seq)
            got = body.split("\n")[start : start + limit - len(out)]
            if budget is not None and start == 0 and len(got) == last - first_seq + 1:
                size = size_of(body) - (len(got) - 1)  # the whole chunk, without a loop
                if size <= budget:
                    budget -= size
                    out.extend(got)
                    if len(out) >= limit:
                        break
                    continue
            if budget is not None:
                fit = _within(got, budget, first=not out)
                budget -= sum(map(size_of, fit))
                out.extend(fit)
                if len(fit) < len(got):
                    break
            else:
                out.extend(got)
            if len(out) >= limit:
                break
        return out

    async def read_joined(
        self, build_id: str, *, after: int, limit: int, max_bytes: int | None = None
    ) -> tuple[str, int]:
        """Like :meth:`read_entries`, but as one comma-joined text and its entry count.

        A catching-up stream sends this as ``[text]`` straight away: whole chunks are
        turned into JSON array members with one ``str.replace`` instead of a split and join.
        """
        parts: list[str] = []
        count = 0
        budget = max_bytes
        async for first_seq, last_seq, body in self._chunks_for(build_id, after, limit):
            start = max(0, after + 1 - first_seq)
            take = min(last_seq - first_seq + 1 - start, limit - count)
            if take <= 0:
                break
            if start == 0 and take == last_seq - first_seq + 1:
                # the whole chunk: its entries' size without a loop (minus the newlines)
                size = size_of(body) - (take - 1) if budget is not None else 0
                if budget is None or size <= budget:
                    parts.append(body.replace("\n", ","))
                    count += take
                    if budget is not None:
                        budget -= size
                    continue
            got = body.split("\n")[start : start + take]
            fit = got if budget is None else _within(got, budget, first=count == 0)
            if budget is not None:
                budget -= sum(map(size_of, fit))
            if fit:
                parts.append(",".join(fit))
                count += len(fit)
            if len(fit) < take or count >= limit:
                break
        return ",".join(parts), count

    async def _chunks_for(
        self, build_id: str, after: int, limit: int, batch: int = 16
    ) -> AsyncIterator[tuple[int, int, str]]:
        """The chunks holding seqs ``after+1 .. after+limit``, in order, ``batch`` per
        query: a reader that stops early (its byte budget is spent) never loads the rest."""
        after = max(after, 0)
        if limit <= 0 or after >= _MAX_SEQ:
            return
        c = entry_chunks.c
        upto = min(after + limit, _MAX_SEQ)
        last_needed = (
            select(c.last_seq)
            .where(c.build_id == build_id, c.last_seq >= upto)
            .order_by(c.last_seq)
            .limit(1)
            .scalar_subquery()
        )
        cursor = after
        while True:
            stmt = (
                select(c.first_seq, c.last_seq, c.body)
                .where(
                    c.build_id == build_id,
                    c.last_seq > cursor,
                    c.last_seq <= func.coalesce(last_needed, _MAX_SEQ),
                )
                .order_by(c.last_seq)
                .limit(batch)
            )
            async with transaction(self.engine) as conn:
                rows = [(int(f), int(la), str(b)) for f, la, b in await conn.execute(stmt)]
            for row in rows:
                yield row
            if len(rows) < batch:
                return
            cursor = rows[-1][1]

    # -- quotas -------------------------------------------------------------------------

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
        async with transaction(self.engine, immediate=True) as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:cls, hashtext(:owner))"),
                    {"cls": _QUOTA_LOCK_CLASS, "owner": owner},
                )
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


async def _advance(
    conn: AsyncConnection,
    build_id: str,
    rows: list[dict[str, Any]],
    *conditions: Any,
    **values: Any,
) -> bool:
    """Append chunk ``rows`` to the stream and move ``builds.last_seq`` past them (and set
    ``values``), only if the stream is exactly where the rows start and ``conditions``
    hold: one conditional UPDATE, then the insert and the readers' wake-up. False when
    nothing was written."""
    prev, new_last = rows[0]["first_seq"] - 1, rows[-1]["last_seq"]
    stmt = (
        update(builds)
        .where(builds.c.id == build_id, builds.c.last_seq == prev, *conditions)
        .values(last_seq=new_last, **values)
    )
    if (await conn.execute(stmt)).rowcount != 1:
        return False
    await conn.execute(insert(entry_chunks), rows)
    await notify(conn, build_id)
    return True


def _within(entries: list[str], budget: int, *, first: bool) -> list[str]:
    """The leading ``entries`` that fit in ``budget`` bytes (one at least when ``first``:
    the page's first entry always fits, a line being at most one piece)."""
    for i, entry in enumerate(entries):
        size = size_of(entry)
        if size > budget and not (first and i == 0):
            return entries[:i]
        budget -= size
    return entries


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


def _chunk_rows(build_id: str, chunks: Sequence[tuple[int, Sequence[str]]]) -> list[dict[str, Any]]:
    """Rows for entry_chunks, checked to be contiguous and splittable on "\\n" again."""
    rows: list[dict[str, Any]] = []
    expected: int | None = None
    for first_seq, entries in chunks:
        if not entries:
            continue
        if first_seq < 1 or (expected is not None and first_seq != expected):
            raise SeqConflict(f"build {build_id!r}: chunk at seq {first_seq} is not contiguous")
        body = "\n".join(entries)
        if body.count("\n") != len(entries) - 1 or "\x00" in body:
            raise ValueError("an entry contains a raw newline or NUL: pass json.dumps text")
        last_seq = first_seq + len(entries) - 1
        rows.append(
            {"build_id": build_id, "first_seq": first_seq, "last_seq": last_seq, "body": body}
        )
        expected = last_seq + 1
    return rows

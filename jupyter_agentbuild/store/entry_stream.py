"""A build's entry stream in the store: chunks of consecutive entries, appended only where
the stream ends, read by seq without parsing any JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..textsize import size_of
from .engine import transaction
from .notify import notify
from .schema import builds, entry_chunks

#: seq columns are 32-bit INTEGER; bounds past this would overflow PostgreSQL's binds.
_MAX_SEQ = 2**31 - 1


class SeqConflict(RuntimeError):
    """Chunks that do not continue the build's stream exactly (gap, overlap, or no build).

    Not worth retrying: the writer's idea of ``last_seq`` is wrong.
    """


class EntryStream:
    """The entry-stream queries of :class:`~.repository.Store`."""

    engine: AsyncEngine

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
        rows = chunk_rows(build_id, chunks)
        if not rows:
            return
        prev, new_last = rows[0]["first_seq"] - 1, rows[-1]["last_seq"]
        async with transaction(self.engine) as conn:
            if await advance_stream(conn, build_id, rows):
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


async def advance_stream(
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


def chunk_rows(build_id: str, chunks: Sequence[tuple[int, Sequence[str]]]) -> list[dict[str, Any]]:
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


__all__ = ["EntryStream", "SeqConflict", "advance_stream", "chunk_rows"]

"""repository.py, the entry stream: chunks in, exactly ``seq > after`` out, atomically."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from jupyter_agentbuild.store import BuildRow, SeqConflict, Store
from jupyter_agentbuild.store.schema import entry_chunks

Run = Callable[[Awaitable[Any]], Any]
MakeBuild = Callable[..., Awaitable[BuildRow]]


def entry(seq: int) -> str:
    """An entry as the runner writes it; the text has characters JSON must escape."""
    return json.dumps({"seq": seq, "kind": "log", "stream": "stdout", "text": f'l{seq} "q"\t\\'})


def uneven_chunks(first: int, count: int, rng: random.Random) -> list[tuple[int, list[str]]]:
    chunks, seq = [], first
    while seq < first + count:
        size = min(rng.choice([1, 1, 2, 3, 7, 13, 37]), first + count - seq)
        chunks.append((seq, [entry(s) for s in range(seq, seq + size)]))
        seq += size
    return chunks


def seqs(entries: Sequence[str]) -> list[int]:
    return [json.loads(e)["seq"] for e in entries]


async def last_seq(store: Store, build_id: str) -> int:
    build = await store.get_build(build_id)
    assert build is not None
    return build.last_seq


def test_every_after_and_limit_reads_exactly_the_next_entries(
    store: Store, make_build: MakeBuild, run: Run
) -> None:
    """No gap, no duplicate, whatever ``after`` is: chunk edges, mid-chunk, end, beyond."""
    total = 300
    rng = random.Random(6)
    chunks = uneven_chunks(1, total, rng)
    limits = [1, 2, 3, 8, 41, 1000]

    async def main() -> None:
        build = await make_build()
        # Several appends of several chunks each, as the runner's flushes would be.
        for i in range(0, len(chunks), 9):
            await store.append_chunks(build.id, chunks[i : i + 9])
        assert await last_seq(store, build.id) == total
        all_entries = [entry(s) for s in range(1, total + 1)]
        for after in range(-1, total + 3):
            for limit in limits if after % 5 == 0 else limits[after % 3 :: 3]:
                got = await store.read_entries(build.id, after=after, limit=limit)
                want = all_entries[max(after, 0) : max(after, 0) + limit]
                assert got == want, (after, limit)

    run(main())


def test_a_client_paging_through_never_misses_or_repeats(
    store: Store, make_build: MakeBuild, run: Run
) -> None:
    """Read while the writer appends, resuming from the last seq seen (a reconnect)."""

    async def main() -> None:
        build = await make_build()
        chunks = uneven_chunks(1, 400, random.Random(1))
        seen: list[int] = []

        async def writer() -> None:
            for i in range(0, len(chunks), 3):
                await store.append_chunks(build.id, chunks[i : i + 3])
                await asyncio.sleep(0)

        async def reader() -> None:
            while len(seen) < 400:
                page = await store.read_entries(build.id, after=seen[-1] if seen else 0, limit=17)
                seen.extend(seqs(page))
                await asyncio.sleep(0)

        await asyncio.wait_for(asyncio.gather(writer(), reader()), 30)
        assert seen == list(range(1, 401))

    run(main())


def test_last_seq_never_runs_ahead_of_stored_entries(
    store: Store, make_build: MakeBuild, run: Run
) -> None:
    """Whenever a reader sees ``last_seq = L``, the entry with seq L is readable."""

    async def main() -> None:
        build = await make_build()
        chunks = uneven_chunks(1, 600, random.Random(2))
        done = asyncio.Event()
        checks = 0

        async def writer() -> None:
            for i in range(0, len(chunks), 2):
                await store.append_chunks(build.id, chunks[i : i + 2])
            done.set()

        async def reader() -> None:
            nonlocal checks
            while not done.is_set():
                seen = await last_seq(store, build.id)
                if seen:
                    page = await store.read_entries(build.id, after=seen - 1, limit=5)
                    assert seqs(page)[0] == seen
                    checks += 1
                await asyncio.sleep(0)

        await asyncio.wait_for(asyncio.gather(writer(), reader(), reader()), 30)
        assert checks > 0

    run(main())


def test_a_failed_append_stores_nothing_and_leaves_last_seq(
    store: Store, make_build: MakeBuild, run: Run
) -> None:
    """Chunk insert fails after last_seq was advanced: the whole transaction rolls back."""

    async def main() -> None:
        build = await make_build()
        await store.append_chunks(build.id, [(1, [entry(1), entry(2)])])
        # A stray row where the next chunk (seqs 3..5) will go makes its INSERT fail.
        async with store.engine.begin() as conn:
            await conn.execute(
                insert(entry_chunks).values(build_id=build.id, first_seq=5, last_seq=5, body="x")
            )
        with pytest.raises(IntegrityError):
            await store.append_chunks(build.id, [(3, [entry(3), entry(4), entry(5)])])
        assert await last_seq(store, build.id) == 2
        assert seqs(await store.read_entries(build.id, after=0, limit=2)) == [1, 2]

    run(main())


def test_append_refuses_gaps_overlaps_and_bad_entries(
    store: Store, make_build: MakeBuild, run: Run
) -> None:
    async def main() -> None:
        build = await make_build()
        await store.append_chunks(build.id, [(1, [entry(1), entry(2), entry(3)])])
        for bad in (
            [(5, [entry(5)])],  # gap
            [(3, [entry(3), entry(4)])],  # overlap
            [(4, [entry(4)]), (6, [entry(6)])],  # gap between chunks
            [(0, [entry(0)])],
        ):
            with pytest.raises(SeqConflict):
                await store.append_chunks(build.id, bad)
        with pytest.raises(ValueError, match="newline"):
            await store.append_chunks(build.id, [(4, ['{"a":\n1}'])])
        with pytest.raises(SeqConflict, match="does not exist"):
            await store.append_chunks("missing", [(1, [entry(1)])])
        assert await last_seq(store, build.id) == 3
        assert seqs(await store.read_entries(build.id, after=0, limit=100)) == [1, 2, 3]

        # Re-sending what is already stored (a retry after a lost commit reply) is a no-op;
        # empty chunks are skipped; the stream then goes on normally.
        await store.append_chunks(build.id, [(2, [entry(2), entry(3)])])
        await store.append_chunks(build.id, [])
        await store.append_chunks(build.id, [(4, []), (4, [entry(4)]), (5, [entry(5)])])
        assert await last_seq(store, build.id) == 5
        assert seqs(await store.read_entries(build.id, after=0, limit=100)) == [1, 2, 3, 4, 5]

    run(main())


def test_reads_are_per_build_and_deleting_a_build_deletes_its_entries(
    store: Store, make_build: MakeBuild, run: Run
) -> None:
    async def main() -> None:
        one, two = await make_build(), await make_build()
        await store.append_chunks(one.id, uneven_chunks(1, 50, random.Random(3)))
        await store.append_chunks(two.id, [(1, [entry(1)])])
        assert seqs(await store.read_entries(two.id, after=0, limit=100)) == [1]
        assert await store.read_entries(one.id, after=0, limit=0) == []
        assert await store.read_entries("missing", after=0, limit=10) == []

        assert await store.delete_build(one.id)
        assert not await store.delete_build(one.id)
        assert await store.get_build(one.id) is None
        assert await store.read_entries(one.id, after=0, limit=100) == []
        async with store.engine.connect() as conn:
            left = await conn.scalar(
                select(func.count())
                .select_from(entry_chunks)
                .where(entry_chunks.c.build_id == one.id)
            )
        assert left == 0
        assert seqs(await store.read_entries(two.id, after=0, limit=100)) == [1]

    run(main())


def test_reads_stop_at_a_byte_budget_after_at_least_one_entry(
    store: Store, make_build: MakeBuild, run: Run
) -> None:
    """``max_bytes`` cuts a read early (whole entries; the first always fits), on chunk
    edges and mid-chunk, the same for read_entries and read_joined."""
    rng = random.Random(11)
    total = 200
    texts = {s: "é" * rng.choice([0, 5, 40, 300, 2000]) for s in range(1, total + 1)}

    def big(seq: int) -> str:
        return json.dumps({"seq": seq, "text": texts[seq]}, ensure_ascii=False)

    chunks, seq = [], 1
    while seq <= total:
        size = min(rng.choice([1, 3, 17, 60]), total + 1 - seq)
        chunks.append((seq, [big(s) for s in range(seq, seq + size)]))
        seq += size

    def want(after: int, limit: int, budget: int) -> list[str]:
        out: list[str] = []
        for s in range(after + 1, min(total, after + limit) + 1):
            size = len(big(s).encode())
            if out and size > budget:
                break
            out.append(big(s))
            budget -= size
        return out

    async def main() -> None:
        build = await make_build()
        await store.append_chunks(build.id, chunks)
        for _ in range(400):
            after = rng.randint(0, total)
            limit = rng.choice([1, 5, 50, 1000])
            budget = rng.choice([0, 100, 4000, 20000, 10**6])
            got = await store.read_entries(build.id, after=after, limit=limit, max_bytes=budget)
            assert got == want(after, limit, budget), (after, limit, budget)
            text, count = await store.read_joined(
                build.id, after=after, limit=limit, max_bytes=budget
            )
            assert count == len(got) and text == ",".join(got), (after, limit, budget)

    run(main())

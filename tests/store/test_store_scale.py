"""A read costs what is new, not what is old: tail of a 1,000,000-entry build vs its head."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from jupyter_agentbuild.store import BuildRow, Store

Run = Callable[[Awaitable[Any]], Any]
CHUNKS, PER_CHUNK = 1000, 1000


@pytest.mark.slow
def test_tail_read_of_a_million_entries_costs_about_a_head_read(
    store: Store, make_build: Callable[..., Awaitable[BuildRow]], run: Run
) -> None:
    async def main() -> None:
        build = await make_build()
        template = '{"seq":%d,"kind":"log","stream":"stdout","step":1,"text":"line"}'
        for start in range(0, CHUNKS, 100):
            chunks = []
            for c in range(start, start + 100):
                first = c * PER_CHUNK + 1
                chunks.append((first, [template % s for s in range(first, first + PER_CHUNK)]))
            await store.append_chunks(build.id, chunks)
        total = CHUNKS * PER_CHUNK
        assert (await store.get_build(build.id)).last_seq == total  # type: ignore[union-attr]

        async def timed(after: int, limit: int) -> float:
            t = time.perf_counter()
            got = await store.read_entries(build.id, after=after, limit=limit)
            elapsed = time.perf_counter() - t
            assert len(got) == min(limit, total - after)
            assert got[0] == template % (after + 1)
            return elapsed

        def median(times: list[float]) -> float:
            return statistics.median(times)

        await timed(0, 1000)  # warm up the pool and caches alike for both
        head = median([await timed(0, 1000) for _ in range(9)])
        tail = median([await timed(total - 1000, 1000) for _ in range(9)])
        mid_chunk_tail = median([await timed(total - 1500, 1000) for _ in range(9)])
        assert tail < 5 * head, (head, tail)
        assert mid_chunk_tail < 5 * head, (head, mid_chunk_tail)

    run(main())

"""The build log on a real store: memory reads cut at a byte budget exactly as the store's,
chunks bounded in bytes, and the pending buffer bounded in bytes (back-pressure)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from jupyter_agentbuild.buildlog import BuildLog
from jupyter_agentbuild.store import BuildRow, Store

Run = Callable[[Awaitable[Any]], Any]
MakeBuild = Callable[..., Awaitable[BuildRow]]


def test_memory_and_store_reads_agree_under_a_byte_budget(
    store: Store, make_build: MakeBuild, run: Run
) -> None:
    rng = random.Random(5)

    async def main() -> None:
        build = await make_build()
        written: list[list[str]] = []

        async def write(build_id: str, chunks: Any) -> None:
            written.extend(list(entries) for _, entries in chunks)
            await store.append_chunks(build_id, chunks)

        build_log = BuildLog(
            build.id, write, flush_interval=0.01, chunk_bytes=3000, retain_bytes=20_000
        )
        build_log.start()
        for step in range(60):
            lines = ["é" * rng.choice([0, 10, 200, 1500]) for _ in range(rng.randint(1, 9))]
            await build_log.log("stdout", step, lines)
            if step % 7 == 0:
                await build_log.flush()
        await build_log.event("note", {"x": 1})
        half = build_log.last_seq
        await build_log.flush()
        for _ in range(5):  # some may still be pending when read: those are not shown
            await build_log.log("stderr", 99, ["y" * rng.randint(1, 500)])
        assert all(sum(len(e.encode()) for e in c) <= 3000 or len(c) == 1 for c in written)
        assert build_log.memory_start > 1  # the oldest entries are only in the store now
        for _ in range(300):
            after = rng.randint(build_log.memory_start - 1, build_log.stored_seq)
            limit = rng.choice([1, 4, 30, 1000])
            budget = rng.choice([0, 500, 5000, 10**6])
            visible = build_log.stored_seq  # (the flusher may store more while we await below)
            got = build_log.read(after, limit, budget)
            assert got is not None
            if after < half:  # what is stored for sure: the same cut from the store
                stored = await store.read_entries(
                    build.id, after=after, limit=min(limit, half - after), max_bytes=budget
                )
                assert got[: len(stored)] == stored and len(got) >= len(stored)
            sizes = [len(e.encode()) for e in got]
            assert len(got) <= limit and (len(got) <= 1 or sum(sizes) <= budget)
            if got and after + len(got) < min(visible, after + limit):
                following = build_log.read(after + len(got), 1)
                assert following is not None
                assert sum(sizes) + len(following[0].encode()) > budget  # it stopped for bytes
        await build_log.close()

    run(main())


def test_the_pending_buffer_is_bounded_in_bytes(
    store: Store, make_build: MakeBuild, run: Run
) -> None:
    """While the store does not take writes, ``log`` waits once ``max_pending_bytes`` is
    reached: the sandbox reader is paused, memory does not grow."""

    async def main() -> None:
        build = await make_build()
        gate = asyncio.Event()

        async def slow_write(build_id: str, chunks: Any) -> None:
            await gate.wait()
            await store.append_chunks(build_id, chunks)

        build_log = BuildLog(build.id, slow_write, max_pending_bytes=100_000, chunk_bytes=10_000)
        build_log.start()
        line = "z" * 10_000
        accepted = 0
        while build_log.pending_bytes < 100_000:  # each call returns at once: there is room
            await build_log.log("stdout", 0, [line])
            accepted += 1
        assert accepted == 10
        # Full: the next line waits (the sandbox reader stops) while the store is stuck.
        try:
            await asyncio.wait_for(build_log.log("stdout", 0, [line]), 0.3)
            raise AssertionError("log() accepted a line beyond max_pending_bytes")
        except TimeoutError:
            pass
        assert build_log.pending_bytes < 100_000 + 10_200
        gate.set()
        for _ in range(40):
            await build_log.log("stdout", 0, [line])
        await build_log.close()
        assert build_log.stored_seq == 50

    run(main())


def test_readers_see_only_stored_entries_and_need_not_wait_for_the_interval(
    store: Store, make_build: MakeBuild, run: Run
) -> None:
    """An entry reaches a reader only once it is in the store: after a crash the next
    server writes ``interrupted`` at the first seq the store lacks, so a reader that had
    seen an unstored entry there would miss that end. A waiting reader does not make the
    writer wait for its (here 60 s) flush interval."""

    async def main() -> None:
        build = await make_build()
        gate = asyncio.Event()

        async def gated_write(build_id: str, chunks: Any) -> None:
            await gate.wait()
            await store.append_chunks(build_id, chunks)

        build_log = BuildLog(build.id, gated_write, flush_interval=60)
        build_log.start()
        await build_log.log("stdout", 0, ["one", "two"])
        assert build_log.last_seq == 2
        assert build_log.read(0, 10) == [] and build_log.read_frame(0, 10) == (b"[]", 0)
        reader = asyncio.create_task(build_log.wait(0))
        await asyncio.sleep(0)  # the reader is now waiting (and has urged the flusher)
        assert not reader.done()  # the write has not gone through: nothing to see
        gate.set()
        await asyncio.wait_for(reader, 10)  # far sooner than the 60 s interval
        assert build_log.stored_seq == 2
        seen = build_log.read(0, 10)
        assert seen is not None and len(seen) == 2
        assert seen == await store.read_entries(build.id, after=0, limit=10)
        # while a reader waits, each new entry is written at once
        waiting = asyncio.create_task(build_log.wait(2))
        await asyncio.sleep(0)
        await build_log.log("stdout", 0, ["three"])
        await asyncio.wait_for(waiting, 10)
        assert (await store.read_entries(build.id, after=2, limit=10)) == build_log.read(2, 10)
        await build_log.close()

    run(main())

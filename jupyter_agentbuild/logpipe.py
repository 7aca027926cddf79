"""The log pipeline of one build: assign seq, batch into the store, fan out live.

A :class:`LogPipe` is the single writer of its build's entry stream. Entries are
encoded once (see :mod:`.entries`), kept in memory until they are stored (and a
while after, so live readers rarely touch the database), written in chunks by a
flusher task whose every write is awaited and retried with backoff, and handed
to live readers as soon as they are accepted. The pending buffer is bounded:
when the store falls behind, :meth:`LogPipe.log` waits, which in turn stops the
sandbox reader (back-pressure), instead of letting memory grow.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .entries import encode_event, encode_logs, iso, join_array, utcnow
from .store.repository import SeqConflict

log = logging.getLogger(__name__)

#: ``await write(build_id, chunks)`` stores chunks of ``(first_seq, [entry_json, ...])``.
ChunkWriter = Callable[[str, Sequence[tuple[int, Sequence[str]]]], Awaitable[None]]


class StoreUnavailable(Exception):
    """The store refused writes for longer than the pipe's patience."""


class LogPipe:
    """Seq assignment, batching, retrying and live fan-out for one build."""

    def __init__(
        self,
        build_id: str,
        write: ChunkWriter,
        *,
        last_seq: int = 0,
        flush_interval: float = 0.25,
        chunk_size: int = 1000,
        max_pending: int = 100_000,
        retain_bytes: int = 32 * 2**20,
        retry_timeout: float = 60.0,
        secrets: Sequence[str] = (),
    ) -> None:
        self.build_id = build_id
        self._write = write
        self.flush_interval = flush_interval
        self.chunk_size = chunk_size
        self.max_pending = max(max_pending, chunk_size)
        #: Stored entries stay in memory up to this many characters, so readers that
        #: fall a little behind are served without touching the database.
        self.retain_bytes = retain_bytes
        self.retry_timeout = retry_timeout
        self._secrets = [s for s in secrets if s]
        #: Newest seq handed out, and newest seq known to be in the store.
        self.last_seq = last_seq
        self.stored_seq = last_seq
        self.closed = False
        #: Set while the store has refused writes for longer than ``retry_timeout``.
        self.stalled: BaseException | None = None
        self._pending: list[str] = []  # seqs stored_seq+1 .. last_seq
        self._kept: deque[tuple[int, list[str], int]] = deque()  # stored chunks still in memory
        self._kept_size = 0
        self._new = asyncio.Event()  # replaced on each append; readers wait on the old one
        self._stored = asyncio.Event()
        self._wake_flusher = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._frames: dict[tuple[int, int], bytes] = {}

    # -- writing ---------------------------------------------------------------

    def start(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name=f"flush-{self.build_id}")

    async def log(self, stream: str, step: int, lines: list[str], continued: bool = False) -> None:
        """Accept output lines; waits while the pending buffer is full (back-pressure)."""
        if not lines:
            return
        while len(self._pending) >= self.max_pending:
            if self.stalled is not None:
                raise StoreUnavailable(str(self.stalled))
            self._wake_flusher.set()
            await self._stored.wait()
        if self._secrets:
            lines = [self._mask(text) for text in lines]
        self._append(
            encode_logs(self.last_seq + 1, iso(utcnow()) or "", stream, step, lines, continued)
        )

    async def event(self, type_: str, data: dict[str, Any]) -> int:
        """Accept an event entry; returns its seq."""
        self._append([encode_event(self.last_seq + 1, iso(utcnow()) or "", type_, data)])
        return self.last_seq

    def _append(self, entries: list[str]) -> None:
        if self.closed:
            raise RuntimeError(f"log pipe of {self.build_id} is closed")
        self._pending.extend(entries)
        self.last_seq += len(entries)
        self._wake_flusher.set()
        self._notify()

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def _notify(self) -> None:
        new, self._new = self._new, asyncio.Event()
        new.set()

    def _signal_stored(self) -> None:
        """Wake everyone waiting for the flusher's next round (stored, or stalled)."""
        stored, self._stored = self._stored, asyncio.Event()
        stored.set()

    async def flush(self) -> None:
        """Return once everything accepted so far is in the store."""
        target = self.last_seq
        while self.stored_seq < target:
            if self.stalled is not None:
                raise StoreUnavailable(str(self.stalled))
            self._wake_flusher.set()
            await self._stored.wait()

    async def close(self) -> None:
        """Final flush, then stop the flusher and wake every reader for the last time."""
        self._wake_flusher.set()
        try:
            await self.flush()
        finally:
            self.closed = True
            if self._flusher is not None:
                self._flusher.cancel()
                await asyncio.gather(self._flusher, return_exceptions=True)
            self._notify()

    async def _flush_loop(self) -> None:
        while True:
            await self._wake_flusher.wait()
            if len(self._pending) < self.chunk_size:
                # Let a batch build up, but never hold entries longer than the interval.
                await asyncio.sleep(self.flush_interval)
            self._wake_flusher.clear()
            if self._pending:
                await self._store_pending()
            self._signal_stored()

    async def _store_pending(self) -> None:
        count = len(self._pending)
        first = self.stored_seq + 1
        batch = self._pending[:count]
        chunks = [
            (first + i, batch[i : i + self.chunk_size]) for i in range(0, count, self.chunk_size)
        ]
        await self._write_with_retry(chunks)
        del self._pending[:count]
        self.stored_seq += count
        self._keep(chunks)

    async def _write_with_retry(self, chunks: list[tuple[int, list[str]]]) -> None:
        delay = 0.05
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_timeout
        while True:
            try:
                await self._write(self.build_id, chunks)
                self.stalled = None
                return
            except asyncio.CancelledError:
                raise
            except SeqConflict as exc:
                # The store refused a gap or overlap: a bug, not an outage. Retrying
                # cannot help; fail the build now and keep the entries for the log.
                log.error("agentbuild: log stream of %s out of order: %s", self.build_id, exc)
                if self.stalled is None:
                    self.stalled = exc
                    self._signal_stored()
                await asyncio.sleep(5.0)
            except Exception as exc:  # any store error: retry with backoff, never drop
                log.warning(
                    "agentbuild: storing logs of %s failed (%s); retrying in %.2fs",
                    self.build_id,
                    type(exc).__name__,
                    delay,
                )
                if loop.time() + delay > deadline and self.stalled is None:
                    # Wake waiters so the runner can fail the build; keep the entries.
                    self.stalled = exc
                    self._signal_stored()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _keep(self, chunks: list[tuple[int, list[str]]]) -> None:
        for first, entries in chunks:
            size = sum(map(len, entries))
            self._kept.append((first, entries, size))
            self._kept_size += size
        while len(self._kept) > 1 and self._kept_size > self.retain_bytes:
            self._kept_size -= self._kept.popleft()[2]

    # -- reading ---------------------------------------------------------------

    @property
    def memory_start(self) -> int:
        """The oldest seq still in memory (``last_seq + 1`` when nothing is)."""
        if self._kept:
            return self._kept[0][0]
        return self.stored_seq + 1

    def read(self, after: int, limit: int) -> list[str] | None:
        """Entries with ``seq > after`` from memory, or ``None`` if they are only in the store."""
        if after >= self.last_seq:
            return []
        if after >= self.stored_seq:  # a reader at the tail: the pending entries only
            start = after - self.stored_seq
            return self._pending[start : start + limit]
        if after + 1 < self.memory_start:
            return None
        out: list[str] = []
        for first, chunk, _size in self._kept:
            end = first + len(chunk) - 1
            if end <= after:
                continue
            out.extend(chunk[max(0, after + 1 - first) :])
            if len(out) >= limit:
                return out[:limit]
        start = max(0, after + 1 - (self.stored_seq + 1))
        out.extend(self._pending[start : start + limit - len(out)])
        return out

    def read_frame(self, after: int, limit: int) -> tuple[bytes, int] | None:
        """:meth:`read` as an encoded JSON array, shared by every reader at the same cursor.

        Readers that keep up wake together at the same cursor, so the frame is joined
        and encoded once for all of them (entries never change once accepted).
        """
        end = min(self.last_seq, after + limit)
        if end <= after:
            return b"[]", 0  # caught up: nothing to share, nothing to cache
        key = (after, end)
        cached = self._frames.get(key)
        if cached is not None:
            return cached, end - after
        entries = self.read(after, end - after)
        if entries is None:
            return None
        frame = join_array(entries).encode()
        self.cache_frame(key, frame)
        return frame, len(entries)

    def cached_frame(self, key: tuple[int, int]) -> bytes | None:
        return self._frames.get(key)

    def cache_frame(self, key: tuple[int, int], frame: bytes) -> None:
        """Keep a few recent frames (bounded) for the other readers at the same cursor."""
        if len(self._frames) >= 32:
            self._frames.pop(next(iter(self._frames)))
        self._frames[key] = frame

    async def wait(self, after: int) -> None:
        """Wait until there is an entry after ``after`` or the pipe closes."""
        if self.last_seq > after or self.closed:
            return
        event = self._new
        await event.wait()

"""One build's log: assign seq, batch into the store, fan out live.

A :class:`BuildLog` is the single writer of its build's entry stream. Entries are
encoded once (see :mod:`.entries`), kept in memory until they are stored (and a
while after, so live readers rarely touch the database), written in chunks by a
flusher task whose every write is awaited and retried with backoff, and handed
to live readers once they are stored, never before: a reader never sees an entry that
a crash of this server could take back (after a ``kill -9`` the next server writes
``interrupted`` at the first seq the store does not have, and a reader that had seen
an unstored entry there would miss that end). While a reader waits, the flusher does
not wait for its interval: each write starts as soon as the previous one is done, so
readers stay a write behind, and batches grow by themselves under load. The pending buffer is bounded, in
entries and in bytes: when the store falls behind, :meth:`BuildLog.log` waits, which
in turn stops the sandbox reader (back-pressure), instead of letting memory grow.

Secrets are masked here, before an entry exists (see :mod:`.masking`). A build's log
is capped (``max_log_bytes``): beyond it, output is dropped and one ``log_truncated``
event says so, and the build goes on. Reads from memory are bounded in bytes as well
as entries, so no reader makes the server hold more than a page of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Sequence
from itertools import accumulate
from typing import Any

from .entries import encode_event, encode_logs, iso, join_array, size_of, utcnow
from .kept_entries import Chunk, FrameCache, KeptEntries
from .masking import SecretMasker
from .retry import with_backoff
from .store.repository import SeqConflict
from .vocabulary import EventType

log = logging.getLogger(__name__)

#: ``await write(build_id, chunks)`` stores chunks of ``(first_seq, [entry_json, ...])``.
ChunkWriter = Callable[[str, Sequence[tuple[int, Sequence[str]]]], Awaitable[None]]
#: ``await commit((seq, entry_json))`` stores the last entry together with whatever else
#: must become visible with it (the build's terminal row); False when it was refused.
EndCommit = Callable[[tuple[int, str]], Awaitable[bool]]


class StoreUnavailable(Exception):
    """The store refused writes for longer than the build log's patience."""


class BuildLog:
    """Seq assignment, batching, retrying and live fan-out for one build."""

    def __init__(
        self,
        build_id: str,
        write: ChunkWriter,
        *,
        last_seq: int = 0,
        flush_interval: float = 0.25,
        chunk_size: int = 1000,
        chunk_bytes: int = 2**20,
        max_pending: int = 100_000,
        max_pending_bytes: int = 64 * 2**20,
        retain_bytes: int = 32 * 2**20,
        retry_timeout: float = 60.0,
        secrets: Sequence[str] = (),
        max_log_bytes: int | None = None,
    ) -> None:
        self.build_id = build_id
        self._write = write
        self.flush_interval = flush_interval
        self.chunk_size = chunk_size
        #: A stored chunk closes at ``chunk_size`` entries or this many bytes, whichever
        #: comes first, so reading one chunk never means reading megabytes.
        self.chunk_bytes = chunk_bytes
        self.max_pending = max(max_pending, chunk_size)
        self.max_pending_bytes = max_pending_bytes
        self.retry_timeout = retry_timeout
        self._masker = SecretMasker(secrets)
        #: Bytes of log text this build may store; the rest is dropped (None: no cap).
        self.max_log_bytes = max_log_bytes
        self.log_bytes = 0
        self.truncated = False
        #: Newest seq handed out, and newest seq known to be in the store.
        self.last_seq = last_seq
        self.stored_seq = last_seq
        self.closed = False
        #: Set once the last entry is stored with the terminal row (:meth:`end`).
        self.ended = False
        #: Set while the store has refused writes for longer than ``retry_timeout``.
        self.stalled: BaseException | None = None
        # Sizes are kept as end offsets in the byte stream of every entry accepted (its
        # prefix sums), so a byte budget is cut with a bisect instead of a loop in Python.
        self._offset = 0  # the end offset of the newest entry
        self._stored_offset = 0  # ... of the newest stored one
        self._pending: list[str] = []  # seqs stored_seq+1 .. last_seq
        self._pending_ends: list[int] = []  # their end offsets
        #: Stored entries stay in memory up to ``retain_bytes``, so readers that fall
        #: a little behind are served without touching the database.
        self._kept = KeptEntries(retain_bytes)
        self._new = asyncio.Event()  # replaced on each append; readers wait on the old one
        self._stored = asyncio.Event()
        self._wake_flusher = asyncio.Event()
        self._urgent = asyncio.Event()  # someone awaits a flush: do not wait for the interval
        self._flusher: asyncio.Task[None] | None = None
        self._watchers = 0  # readers waiting in :meth:`wait` (then every write is urgent)
        self._frames = FrameCache()

    # -- writing ---------------------------------------------------------------

    def start(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name=f"flush-{self.build_id}")

    @property
    def pending_bytes(self) -> int:
        """Bytes of accepted entries not yet in the store (bounded by ``max_pending_bytes``)."""
        return self._offset - self._stored_offset

    def _full(self) -> bool:
        return len(self._pending) >= self.max_pending or (
            self._offset - self._stored_offset >= self.max_pending_bytes
        )

    async def log(self, stream: str, step: int, lines: list[str], continued: bool = False) -> None:
        """Accept output lines; waits while the pending buffer is full (back-pressure).

        Secrets are masked first; beyond ``max_log_bytes`` the lines are dropped (one
        ``log_truncated`` event says so)."""
        if not lines or self.truncated:
            return
        while self._full():
            if self.stalled is not None:
                raise StoreUnavailable(str(self.stalled))
            self._urgent.set()
            self._wake_flusher.set()
            await self._stored.wait()
        if self._masker:
            lines, continued = self._masker.lines((stream, step), lines, continued)
            if not lines:
                return
        if self.max_log_bytes is not None:
            kept, over = self._fit(lines)
            if over:
                self._truncate(stream, step, kept)
                return
        self._append(
            encode_logs(self.last_seq + 1, iso(utcnow()) or "", stream, step, lines, continued)
        )

    def _fit(self, lines: list[str]) -> tuple[list[str], bool]:
        """The lines that still fit under ``max_log_bytes`` (counted), and whether some
        did not."""
        assert self.max_log_bytes is not None
        room = self.max_log_bytes - self.log_bytes
        if all(map(str.isascii, lines)):  # mostly: sized in C, without a call per line
            total = sum(map(len, lines))
            if total <= room:
                self.log_bytes += total
                return lines, False
        for i, text in enumerate(lines):
            size = size_of(text)
            if size > room:
                self.log_bytes = self.max_log_bytes - room
                return lines[:i], True
            room -= size
        self.log_bytes = self.max_log_bytes - room
        return lines, False

    def _truncate(self, stream: str, step: int, kept: list[str]) -> None:
        """The log reached ``max_log_bytes``: store what fits, say so once, drop the rest."""
        now = iso(utcnow()) or ""
        if kept:  # complete lines: only a batch's last line can be a continued piece
            self._append(encode_logs(self.last_seq + 1, now, stream, step, kept, False))
        self.truncated = True
        data = {
            "max_log_bytes": self.max_log_bytes,
            "message": f"the log reached max_log_bytes ({self.max_log_bytes} bytes): "
            "further output of this build is dropped; the build goes on",
        }
        self._append([encode_event(self.last_seq + 1, now, EventType.LOG_TRUNCATED, data)])
        log.warning(
            "agentbuild: build %s reached max_log_bytes (%d); dropping further output",
            self.build_id,
            self.max_log_bytes,
        )

    async def event(self, type_: str, data: dict[str, Any]) -> int:
        """Accept an event entry; returns its seq."""
        self._drain_masker()
        if self._masker:
            data = self._masker.mask_value(data)
        self._append([encode_event(self.last_seq + 1, iso(utcnow()) or "", type_, data)])
        return self.last_seq

    def _drain_masker(self) -> None:
        """Emit what the masker held back of unfinished lines (their stream stopped)."""
        for (stream, step), text in self._masker.drain():
            now = iso(utcnow()) or ""
            self._append(encode_logs(self.last_seq + 1, now, stream, step, [text], False))

    def _append(self, entries: list[str]) -> None:
        if self.closed:
            raise RuntimeError(f"the log of build {self.build_id} is closed")
        self._pending.extend(entries)
        sizes = map(len if all(map(str.isascii, entries)) else size_of, entries)
        self._pending_ends.extend(accumulate(sizes, initial=self._offset))
        del self._pending_ends[-len(entries) - 1]  # the initial value
        self._offset = self._pending_ends[-1]
        self.last_seq += len(entries)
        self._wake_flusher.set()
        if self._watchers:
            self._urgent.set()  # someone waits to read it: store it now

    @property
    def has_secrets(self) -> bool:
        """Whether this build has secrets to mask (then no raw traceback is logged)."""
        return bool(self._masker)

    def mask(self, text: str) -> str:
        """``text`` with this build's secrets masked (for what is written beside the
        stream: the row's ``error``)."""
        return self._masker.mask(text) if self._masker else text

    def _notify(self) -> None:
        new, self._new = self._new, asyncio.Event()
        new.set()

    def _signal_stored(self) -> None:
        """Wake everyone waiting for the flusher's next round (stored, or stalled)."""
        stored, self._stored = self._stored, asyncio.Event()
        stored.set()

    async def flush(self) -> None:
        """Return once everything accepted so far is in the store (written now, without
        waiting for the flush interval)."""
        target = self.last_seq
        while self.stored_seq < target:
            if self.stalled is not None:
                raise StoreUnavailable(str(self.stalled))
            self._urgent.set()
            self._wake_flusher.set()
            await self._stored.wait()

    async def end(self, type_: str, data: dict[str, Any], commit: EndCommit) -> bool:
        """Store everything, then the last entry through ``commit``, which writes it
        together with the build's terminal row: readers of this log, like readers of
        the store, see the entry only once the row says the same. Returns whether
        ``commit`` took it (if not, the entry was never shown to anyone)."""
        self._drain_masker()
        await self.flush()
        if self._masker:
            data = self._masker.mask_value(data)
        seq = self.last_seq + 1
        text = encode_event(seq, iso(utcnow()) or "", type_, data)
        if not await commit((seq, text)):
            return False
        self.last_seq = self.stored_seq = seq
        start, self._offset = self._offset, self._offset + size_of(text)
        self._stored_offset = self._offset
        self._kept.keep([Chunk(seq, [text], [self._offset], start)])
        self.ended = True
        self._notify()
        return True

    async def close(self) -> None:
        """Final flush, then stop the flusher and wake every reader for the last time."""
        self._wake_flusher.set()
        try:
            self._drain_masker()
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
            waiting = self._offset - self._stored_offset
            if len(self._pending) < self.chunk_size and waiting < self.chunk_bytes:
                # Let a batch build up, but never hold entries longer than the interval,
                # nor at all once someone awaits them.
                # (asyncio.timeout, not wait_for: on Python 3.11, wait_for can swallow
                # close()'s cancel when the event is set at the same moment.)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_interval):
                        await self._urgent.wait()
            self._wake_flusher.clear()
            self._urgent.clear()
            if self._pending:
                await self._store_pending()
            if self._pending:
                self._wake_flusher.set()  # a round stores a bounded amount: go on
            self._signal_stored()

    async def _store_pending(self) -> None:
        """Store pending entries, in chunks of at most ``chunk_size`` entries and
        ``chunk_bytes`` bytes (one entry at least), about 8 chunks' bytes per round."""
        first, ends, count = self.stored_seq + 1, self._pending_ends, len(self._pending)
        chunks: list[Chunk] = []
        base = self._stored_offset
        round_end = base + 8 * self.chunk_bytes
        i = 0
        while i < count and base < round_end:
            j = min(count, i + self.chunk_size, bisect_right(ends, base + self.chunk_bytes, i))
            j = max(j, i + 1)
            chunks.append(Chunk(first + i, self._pending[i:j], ends[i:j], base))
            base, i = ends[j - 1], j
        await self._write_with_retry([(chunk.first, chunk.entries) for chunk in chunks])
        del self._pending[:i]
        del self._pending_ends[:i]
        self.stored_seq += i
        self._stored_offset = base
        self._kept.keep(chunks)
        self._notify()  # readers see entries once they are stored

    async def _write_with_retry(self, chunks: list[tuple[int, list[str]]]) -> None:
        """Write until the store takes it: entries are never dropped. Past the patience
        (``retry_timeout``), or at once on a :class:`SeqConflict` (a bug, not an outage:
        retrying cannot help), the build log is ``stalled``: its waiters wake so the
        runner can fail the build, and the entries stay for the log."""
        await with_backoff(
            lambda: self._write(self.build_id, chunks),
            patience=self.retry_timeout,
            on_failure=self._write_failed,
            forever=True,
        )
        self.stalled = None

    def _write_failed(self, exc: Exception, overdue: bool) -> None:
        if isinstance(exc, SeqConflict):
            log.error("agentbuild: log stream of %s out of order: %s", self.build_id, exc)
        else:
            log.warning(
                "agentbuild: storing logs of %s failed (%s); retrying",
                self.build_id,
                type(exc).__name__,
            )
        if (overdue or isinstance(exc, SeqConflict)) and self.stalled is None:
            self.stalled = exc
            self._signal_stored()

    # -- reading ---------------------------------------------------------------

    @property
    def memory_start(self) -> int:
        """The oldest seq still in memory (``last_seq + 1`` when nothing is)."""
        first = self._kept.first_seq
        return self.stored_seq + 1 if first is None else first

    def read(self, after: int, limit: int, max_bytes: int | None = None) -> list[str] | None:
        """Stored entries with ``seq > after`` from memory, or ``None`` if they are only in
        the store: at most ``limit`` of them and, beyond the first, at most ``max_bytes``.
        Entries not stored yet are not shown (see the module's docstring)."""
        if after >= self.stored_seq:
            return []
        if after + 1 < self.memory_start:
            return None
        return self._kept.read(after, limit, max_bytes)

    def read_frame(
        self, after: int, limit: int, max_bytes: int | None = None
    ) -> tuple[bytes, int] | None:
        """:meth:`read` as an encoded JSON array, shared by every reader at the same cursor.

        Readers that keep up wake together at the same cursor, so the frame is joined
        and encoded once for all of them (entries never change once accepted; a frame
        cached while fewer entries existed is shorter, never wrong).
        """
        if after >= self.stored_seq:
            return b"[]", 0  # caught up: nothing to share, nothing to cache
        cached = self._frames.get(after)
        if cached is not None:
            return cached
        entries = self.read(after, limit, max_bytes)
        if entries is None:
            return None
        frame = join_array(entries).encode()
        self.cache_frame(after, frame, len(entries))
        return frame, len(entries)

    def cache_frame(self, after: int, frame: bytes, count: int) -> None:
        """Keep a few recent frames (bounded in number and bytes) for the other readers
        at the same cursor."""
        self._frames.put(after, frame, count)

    async def wait(self, after: int) -> None:
        """Wait until there is a stored entry after ``after`` or the log closes. Entries
        accepted but not stored are stored now, without waiting for the flush interval."""
        if self.stored_seq > after or self.closed:
            return
        event = self._new
        self._watchers += 1
        try:
            if self.last_seq > after:
                self._urgent.set()
                self._wake_flusher.set()
            await event.wait()
        finally:
            self._watchers -= 1

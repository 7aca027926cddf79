"""What a build log keeps of its stored entries, for live readers: recent chunks, cut
by a byte budget without a loop per entry, and the frames readers at one cursor share."""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from typing import NamedTuple

#: Bytes of encoded frames a build log keeps for readers at the same cursor.
FRAME_CACHE_BYTES = 8 * 2**20
#: Frames kept at most (readers that keep up share the newest few).
FRAME_CACHE_FRAMES = 32


class KeptEntries:
    """Stored chunks still in memory, oldest first, up to ``retain_bytes`` (the newest
    chunk always), so readers that fall a little behind never touch the database."""

    def __init__(self, retain_bytes: int) -> None:
        self.retain_bytes = retain_bytes
        self._chunks: deque[Chunk] = deque()
        self._size = 0

    def keep(self, chunks: list[Chunk]) -> None:
        for chunk in chunks:
            self._chunks.append(chunk)
            self._size += chunk.size
        while len(self._chunks) > 1 and self._size > self.retain_bytes:
            self._size -= self._chunks.popleft().size

    @property
    def first_seq(self) -> int | None:
        """The oldest seq kept (None: nothing is)."""
        return self._chunks[0].first if self._chunks else None

    def read(self, after: int, limit: int, max_bytes: int | None) -> list[str]:
        """Kept entries with ``seq > after``: at most ``limit`` and, beyond the first, at
        most ``max_bytes`` (None: no budget)."""
        out: list[str] = []
        room = [max_bytes]
        for chunk in self._chunks:
            if chunk.first + len(chunk.entries) - 1 <= after:
                continue
            start = max(0, after + 1 - chunk.first)
            if take(out, chunk.entries, chunk.ends, chunk.start, start, limit, room):
                break
        return out


class FrameCache:
    """Encoded frames by the cursor they follow, bounded in number and bytes (the oldest
    go first). Entries never change once stored, so a frame stays right."""

    def __init__(self) -> None:
        self._frames: dict[int, tuple[bytes, int]] = {}
        self._size = 0

    def get(self, after: int) -> tuple[bytes, int] | None:
        return self._frames.get(after)

    def put(self, after: int, frame: bytes, count: int) -> None:
        while self._frames and (
            len(self._frames) >= FRAME_CACHE_FRAMES or self._size + len(frame) > FRAME_CACHE_BYTES
        ):
            self._size -= len(self._frames.pop(next(iter(self._frames)))[0])
        if len(frame) <= FRAME_CACHE_BYTES:
            self._frames[after] = (frame, count)
            self._size += len(frame)


class Chunk(NamedTuple):
    """Consecutive entries from seq ``first``, with their end offsets (``ends``) in the
    log's byte stream; ``start`` is where the first one begins."""

    first: int
    entries: list[str]
    ends: list[int]
    start: int

    @property
    def size(self) -> int:
        return self.ends[-1] - self.start if self.ends else 0


def take(
    out: list[str],
    entries: list[str],
    ends: list[int],
    origin: int,
    start: int,
    limit: int,
    room: list[int | None],
) -> bool:
    """Move ``entries[start:]`` to ``out`` while ``out`` has fewer than ``limit`` and the
    bytes left in ``room[0]`` (None: no budget) allow; ``out``'s first entry always fits
    (a line is at most one piece). ``ends`` are the entries' end offsets, ``origin`` where
    the first begins. Returns whether ``out`` is full."""
    stop = min(len(entries), start + limit - len(out))
    budget = room[0]
    if budget is not None and start < stop:
        base = ends[start - 1] if start else origin
        cut = bisect_right(ends, base + budget, start, stop)
        if cut == start and not out:
            cut = start + 1
        if cut < stop:
            stop = cut
            room[0] = 0  # the budget is spent: the next entry did not fit
        else:
            room[0] = budget - (ends[stop - 1] - base)
    out.extend(entries[start:stop])
    return len(out) >= limit or room[0] == 0


__all__ = ["FRAME_CACHE_BYTES", "Chunk", "FrameCache", "KeptEntries", "take"]

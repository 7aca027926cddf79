"""``artifacts.zip`` and ``artifacts.tar.gz``, produced as streams with bounded memory.

Both archives are plain generators of bytes that read blobs one chunk at a time; the
server drives them from a worker thread in batches (:func:`in_thread`), so neither an
archive nor a file is ever held whole, and the event loop never blocks on disk.

- zip: `zipstream-ng <https://github.com/pR0Ps/zipstream-ng>`_, entries *stored*
  (uncompressed). Stored entries let the archive's exact length be known before the
  first byte (``Content-Length``, so clients show progress and detect a cut-off
  download), cost no CPU, and are what ``zip -0`` makes; ZIP64 is used when needed.
- tar.gz: the stdlib's ``tarfile`` makes the (PAX) headers; the gzip stream is deflated
  at level 1 by ISA-L (the ``isal`` package: about 7x zlib's speed at the same ratio,
  so compression is not the bottleneck of a download), or by the stdlib's ``zlib``
  where ``isal`` is not installed.
"""

from __future__ import annotations

import asyncio
import tarfile
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

from zipstream import ZipStream

try:
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover (a platform without isal wheels)
    _deflate = zlib  # type: ignore[no-redef, misc]

from ..store.artifacts import ArtifactRecord

READ_CHUNK = 256 * 1024
BATCH = 512 * 1024
GZIP_LEVEL = 1
#: Input size per compressor call: ISA-L's working buffers grow with it (1 MB calls cost
#: ~25 MB of heap, 64 KB calls ~2 MB), and many tiny calls fragment the heap.
COMPRESS_PIECE = 64 * 1024

#: ``open_blob(key)``: the blob of the build being archived, open for reading.
BlobOpener = Callable[[str], BinaryIO]


class ArchiveError(Exception):
    """A blob is missing or not the size the manifest says (the download is cut off)."""


class BlobReader:
    """Reads records' bytes, keeping the last blob open: consecutive small files share a
    pack blob, so an archive of thousands of them opens a handful of files."""

    def __init__(self, open_blob: BlobOpener) -> None:
        self.open_blob = open_blob
        self.key: str | None = None
        self.handle: BinaryIO | None = None
        self.buffer = bytearray(READ_CHUNK)

    def chunks(self, record: ArtifactRecord) -> Iterator[memoryview]:
        """Exactly ``record.size`` bytes, in chunks; the blob is opened lazily. Each chunk
        is a view of one reused buffer, valid until the next one is asked for."""
        assert record.blob is not None
        if self.key != record.blob or self.handle is None:
            self.close()
            self.handle = self.open_blob(record.blob)
            self.key = record.blob
        handle = self.handle
        handle.seek(record.offset)
        remaining = record.size
        view = memoryview(self.buffer)
        while remaining > 0:
            count = handle.readinto(view[: min(READ_CHUNK, remaining)])  # type: ignore[attr-defined]
            if not count:
                raise ArchiveError(f"{record.path}: the stored file is shorter than recorded")
            remaining -= count
            yield view[:count]

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        self.handle, self.key = None, None


def zip_stream(
    files: Sequence[ArtifactRecord], open_blob: BlobOpener
) -> tuple[int, Iterator[bytes]]:
    """``(length, chunks)`` of a stored zip of ``files`` (its length is exact)."""
    archive = ZipStream(sized=True)
    reader = BlobReader(open_blob)
    for record in files:
        archive.add(reader.chunks(record), record.path, size=record.size)

    def chunks() -> Iterator[bytes]:
        try:
            yield from archive
        finally:
            reader.close()

    return len(archive), chunks()


class _Gzip:
    """A gzip stream fed in pieces of exactly ``COMPRESS_PIECE`` bytes (small inputs such
    as tar headers are gathered first): few, uniform compressor calls keep the
    compressor's heap small and steady."""

    def __init__(self) -> None:
        self.deflate: Any = _deflate.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # gzip wrapper
        self.pending = bytearray()

    def feed(self, data: bytes | memoryview) -> Iterator[bytes]:
        view = memoryview(data)
        if self.pending:
            room = COMPRESS_PIECE - len(self.pending)
            self.pending += view[:room]
            view = view[room:]
            if len(self.pending) < COMPRESS_PIECE:
                return
            yield self.deflate.compress(self.pending)
            self.pending.clear()
        while len(view) >= COMPRESS_PIECE:
            yield self.deflate.compress(view[:COMPRESS_PIECE])
            view = view[COMPRESS_PIECE:]
        self.pending += view

    def finish(self) -> bytes:
        return bytes(self.deflate.compress(self.pending)) + bytes(self.deflate.flush())


def tar_gz_stream(
    files: Sequence[ArtifactRecord], open_blob: BlobOpener, *, mtime: float | None = None
) -> Iterator[bytes]:
    """A gzip-compressed POSIX (pax) tar of ``files``."""
    stamp = int(time.time() if mtime is None else mtime)
    gzip = _Gzip()
    reader = BlobReader(open_blob)
    try:
        for tar_bytes in _tar_members(files, reader, stamp):
            yield from gzip.feed(tar_bytes)
        yield gzip.finish()
    finally:
        reader.close()


def _tar_members(
    files: Sequence[ArtifactRecord], reader: BlobReader, stamp: int
) -> Iterator[bytes | memoryview]:
    """The uncompressed tar stream."""
    written = 0
    for record in files:
        info = tarfile.TarInfo(record.path)
        info.size = record.size
        info.mtime = stamp
        info.mode = 0o644
        header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        written += len(header)
        yield header
        yield from reader.chunks(record)
        padding = -record.size % tarfile.BLOCKSIZE
        written += record.size + padding
        if padding:
            yield tarfile.NUL * padding
    # The end: two zero blocks, then zeros up to a whole record (as tarfile.close does).
    end = 2 * tarfile.BLOCKSIZE
    end += -(written + end) % tarfile.RECORDSIZE
    yield tarfile.NUL * end


async def in_thread(
    chunks: Iterator[bytes | memoryview], batch: int = BATCH
) -> AsyncIterator[bytes]:
    """Drive a blocking byte generator from a worker thread, about ``batch`` bytes per
    hop. Closing the async iterator closes the generator (and its files).

    Memory: each stream has a thread of its own (not the shared pool), and every part is
    copied at once into one reused batch buffer (parts may be views of a reused read
    buffer), so a hop allocates a single batch-sized object. Hopping between pool threads
    and holding many variable-sized buffers left tens of MB of fragmented heap behind.
    """
    loop = asyncio.get_running_loop()
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentbuild-archive")
    buffer = bytearray(batch)
    carry: list[bytes] = []  # what did not fit in the previous batch

    def take() -> tuple[int, bool]:
        """Fill ``buffer``; the event loop copies it out before the next call."""
        size = 0
        for kept in carry:
            buffer[size : size + len(kept)] = kept
            size += len(kept)
        carry.clear()
        for part in chunks:
            room = batch - size
            if len(part) >= room:
                buffer[size:batch] = part[:room]
                if len(part) > room:
                    carry.append(bytes(part[room:]))
                return batch, False
            buffer[size : size + len(part)] = part
            size += len(part)
        return size, True

    try:
        while True:
            size, done = await loop.run_in_executor(worker, take)
            if size:
                yield bytes(buffer[:size]) if size < batch else bytes(buffer)
            if done:
                return
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            await loop.run_in_executor(worker, close)
        worker.shutdown(wait=False)

"""Artifact collection: a runner hook that copies selected workspace files to the store.

It runs after the steps (after success, or always with ``artifacts.when = "always"``),
before the sandbox goes away and before the terminal status, so its ``artifacts_ready``
event precedes the end of the stream. Everything goes through the sandbox Protocol
(``list_files``, ``read_file``), so every provider collects the same way.

- Bytes are streamed in chunks from the sandbox to the artifact store; the sha256 and
  size are computed on the way, in the worker thread that writes (never a whole file in
  memory). Several files are copied at once.
- Small files (up to ``PACK_MAX``) are appended to shared "pack" blobs, written in
  batches: creating a file costs more than copying 64 KB on a local disk, and an object
  store would need a request per blob. The manifest records each file's blob and offset.
- Symlinks are never followed: each selected link is recorded in the manifest as a
  ``link`` (its target shown only when it stays inside the workspace). Fifos, sockets and
  devices, unreadable files and names that are not UTF-8 are recorded as ``skipped``.
- ``max_files`` (manifest entries) and ``max_bytes`` stop collection in walk order; the
  ``artifacts_ready`` event then says ``truncated`` and why (under the limits' old names,
  ``max_artifact_files`` and ``max_artifact_bytes``, which clients already know).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from traitlets import Int
from traitlets.config import LoggingConfigurable

from ..entries import utcnow
from ..runner import AfterSteps
from ..sandbox.base import Sandbox, SandboxError, WorkspaceEntry
from ..store.artifacts import ArtifactRecord, ArtifactRecords
from ..swallow import swallowed
from ..vocabulary import EventType
from .blobs import ArtifactStore
from .select import Selection

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_PATH_BYTES = 1024
#: Files copied at once: overlaps file creation and thread hand-offs (at most
#: ``2 * CHUNK`` bytes in memory per copy).
COPIERS = 4
#: Files up to this size go into pack blobs...
PACK_MAX = 64 * 1024
#: ...of up to this size (a pack is closed and a new one begun past it)...
PACK_SIZE = 32 << 20
#: ...written whenever this many bytes of small files are waiting.
PACK_BATCH = 1 << 20


class ArtifactError(Exception):
    """Collection failed (the build fails with this message)."""


class _GrewWhileCopied(Exception):
    """The file grew after it was listed."""


@dataclass
class _Manifest:
    """The manifest being built: one slot per selected path, in walk order (a file's slot
    is filled when its copy ends, so copies can run side by side)."""

    max_bytes: int
    max_files: int
    slots: list[ArtifactRecord | None] = field(default_factory=list)
    reserved: int = 0  # bytes of the files dispatched so far (their listed sizes)
    dispatched: int = 0
    truncated_by: str | None = None
    not_collected: int = 0

    def admit(self, record: ArtifactRecord | None, size: int) -> bool:
        """Give a selected path its slot, unless a limit is reached (then it is counted as
        not collected, and so is every path after it). ``record`` None: a file to copy."""
        if self.truncated_by is None and len(self.slots) >= self.max_files:
            self.truncated_by = "max_artifact_files"
        if self.truncated_by is None and record is None and self.reserved + size > self.max_bytes:
            self.truncated_by = "max_artifact_bytes"
        if self.truncated_by is not None:
            self.not_collected += 1
            return False
        self.slots.append(record)
        return True

    @property
    def records(self) -> list[ArtifactRecord]:
        seen: set[str] = set()
        out: list[ArtifactRecord] = []
        for record in self.slots:
            if record is not None and record.path not in seen:
                seen.add(record.path)
                out.append(record)
        return out

    def summary(self, records: list[ArtifactRecord]) -> dict[str, Any]:
        """The ``artifacts_ready`` event (and Build ``artifacts``) of ``records``, which are
        :attr:`records` (passed in: building them walks every slot)."""
        files = [r for r in records if r.kind == "file"]
        out: dict[str, Any] = {
            "count": len(files),
            "total_size": sum(r.size for r in files),
            "truncated": self.truncated_by is not None,
            "links": sum(1 for r in records if r.kind == "link"),
            "skipped": sum(1 for r in records if r.kind == "skipped"),
        }
        if self.truncated_by is not None:
            limit = self.max_files if self.truncated_by == "max_artifact_files" else self.max_bytes
            out.update(
                reason=self.truncated_by,
                limit=limit,
                not_collected=self.not_collected,
                message=(
                    f"artifact collection stopped at the {self.truncated_by} limit "
                    f"({limit}): {self.not_collected} selected path(s) were not collected"
                ),
            )
        return out


class _Packer:
    """Appends small files to pack blobs ``pack-NNNNN``, one thread hop per batch."""

    def __init__(self, blobs: ArtifactStore, build_id: str) -> None:
        self.blobs = blobs
        self.build_id = build_id
        self.packs = 0
        self.key: str | None = None
        self.size = 0  # bytes placed in the current pack (written or waiting)
        self.batch: list[tuple[str, int, bytes]] = []
        self.batch_bytes = 0
        self.lock = asyncio.Lock()
        self.handle: BinaryIO | None = None
        self.handle_key: str | None = None

    async def add(self, path: str, data: bytes) -> ArtifactRecord:
        """Place ``data`` in the current pack; its record (the bytes are written later,
        at the latest by :meth:`close`)."""
        if self.key is None or (self.size and self.size + len(data) > PACK_SIZE):
            self.key, self.size = f"pack-{self.packs:05d}", 0
            self.packs += 1
        key, offset = self.key, self.size
        self.size += len(data)
        self.batch.append((key, offset, data))
        self.batch_bytes += len(data)
        digest = hashlib.sha256(data).hexdigest()  # at most PACK_MAX bytes: cheap
        if self.batch_bytes >= PACK_BATCH:
            await self.flush()
        return ArtifactRecord(path, "file", size=len(data), sha256=digest, blob=key, offset=offset)

    async def flush(self) -> None:
        async with self.lock:  # batches are written in the order they were filled
            batch, self.batch, self.batch_bytes = self.batch, [], 0
            if batch:
                await asyncio.to_thread(self._write, batch)

    def _write(self, batch: list[tuple[str, int, bytes]]) -> None:
        for key, offset, data in batch:
            if key != self.handle_key or self.handle is None:
                if self.handle is not None:
                    self.handle.close()
                self.handle = self.blobs.open_write(self.build_id, key)
                self.handle_key = key
            if self.handle.tell() != offset:
                raise RuntimeError(f"pack {key}: expected offset {offset}")
            self.handle.write(data)

    async def close(self) -> None:
        await self.flush()
        if self.handle is not None:
            await asyncio.to_thread(self.handle.close)
            self.handle = None


def _problem(path: str) -> str | None:
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        return "name_not_utf8"
    if size > MAX_PATH_BYTES:
        return "path_too_long"
    return None


def _printable(path: str) -> str:
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if len(text.encode("utf-8")) > MAX_PATH_BYTES:
        text = text.encode("utf-8")[: MAX_PATH_BYTES - 3].decode("utf-8", "ignore") + "..."
    return text


def _link_target(path: str, target: str | None) -> str | None:
    """The link's text when it stays inside the workspace (lexically), else None."""
    if target is None or target.startswith("/") or "\x00" in target:
        return None
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        return None
    return target


def _write(
    handle: BinaryIO | None,
    opener: Callable[[], BinaryIO],
    chunk: bytes,
    digest: Any,
    close: bool,
) -> BinaryIO | None:
    """Runs in a worker thread: open on first use, hash, write, maybe close."""
    if handle is None:
        handle = opener()
    if chunk:
        digest.update(chunk)
        handle.write(chunk)
    if close:
        handle.close()
        return None
    return handle


class ArtifactCollector(LoggingConfigurable):
    """The :class:`~jupyter_agentbuild.build_job.BuildHook` that collects artifacts; its
    limits are ``c.ArtifactCollector.*``."""

    max_bytes = Int(
        2 * 1024**3,
        help="""Bytes one build may collect (default 2 GiB); collection stops there and the
        artifacts_ready event says it was truncated.""",
    ).tag(config=True, legacy="max_artifact_bytes")
    max_files = Int(
        100_000,
        help="""Manifest entries (files, links, skipped paths) one build may collect
        (default 100000); collection stops there, marked truncated.""",
    ).tag(config=True, legacy="max_artifact_files")

    def __init__(self, records: ArtifactRecords, blobs: ArtifactStore, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.records = records
        self.blobs = blobs

    async def after_steps(self, ctx: AfterSteps) -> None:
        spec = ctx.spec.artifacts
        if spec is None or (not ctx.succeeded and spec.when != "always"):
            return
        try:
            manifest = await self._collect(
                ctx.build_id, ctx.sandbox, Selection(spec.paths, spec.exclude)
            )
            records = manifest.records
            summary = manifest.summary(records)
            await self.records.save(
                ctx.build_id,
                owner=ctx.owner,
                created_at=utcnow(),
                records=records,
                truncated=manifest.truncated_by is not None,
                summary=summary,
            )
        except BaseException as exc:
            await asyncio.shield(self._discard(ctx.build_id))
            if isinstance(exc, Exception):
                message = f"artifact collection failed: {exc}"
                log.warning("agentbuild: build %s: %s", ctx.build_id, message)
                await ctx.build_log.event(EventType.ARTIFACTS_FAILED, {"error": message})
                raise ArtifactError(message) from exc
            raise
        await ctx.build_log.event(EventType.ARTIFACTS_READY, summary)

    async def _discard(self, build_id: str) -> None:
        with swallowed(log, f"discarding the artifact files of {build_id}"):
            await asyncio.to_thread(self.blobs.remove_build, build_id)
        with swallowed(log, f"discarding the artifact records of {build_id}"):
            await self.records.delete(build_id)

    async def _collect(self, build_id: str, sandbox: Sandbox, selection: Selection) -> _Manifest:
        """Walk, select and copy; up to ``COPIERS`` files are copied at once (file creation
        and thread hand-offs overlap), the manifest keeps the walk order."""
        manifest = _Manifest(self.max_bytes, self.max_files)
        await asyncio.to_thread(self.blobs.remove_build, build_id)  # a retried collection
        room = asyncio.Semaphore(COPIERS)
        running: set[asyncio.Task[None]] = set()
        failures: list[BaseException] = []
        packer = _Packer(self.blobs, build_id)

        async def copy(entry: WorkspaceEntry, key: str, index: int) -> None:
            try:
                if entry.size <= PACK_MAX:
                    record = await self._pack(sandbox, entry, packer)
                else:
                    record = await self._copy(build_id, sandbox, entry, key)
                manifest.slots[index] = record
            except BaseException as exc:
                failures.append(exc)
                raise
            finally:
                room.release()

        try:
            async for entry in sandbox.list_files(prune=selection.prune):
                if entry.kind == "dir" or not selection.selects(entry.path):
                    continue
                record = _record_of(entry)  # None: a file to copy
                if not manifest.admit(record, entry.size) or record is not None:
                    continue
                key = f"{manifest.dispatched:07d}"
                manifest.dispatched += 1
                manifest.reserved += entry.size
                await room.acquire()
                if failures:
                    room.release()
                    raise failures[0]
                task = asyncio.create_task(copy(entry, key, len(manifest.slots) - 1))
                running.add(task)
                task.add_done_callback(running.discard)
            if running:
                await asyncio.gather(*running)
            await packer.close()
        except BaseException as exc:
            # On a failure, let the copies in flight end (a cancelled task would leave its
            # worker thread writing after the clean-up); on cancellation, stop them now
            # (the retention sweep removes what a thread writes afterwards).
            if not isinstance(exc, Exception):
                for task in running:
                    task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            with swallowed(log, "closing an artifact packer after a failure"):
                await packer.close()
            raise
        return manifest

    async def _pack(
        self, sandbox: Sandbox, entry: WorkspaceEntry, packer: _Packer
    ) -> ArtifactRecord:
        """A small file: read whole (at most ``PACK_MAX`` bytes), then packed."""
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in sandbox.read_file(entry.path, chunk_size=CHUNK):
                size += len(chunk)
                if size > entry.size:
                    return ArtifactRecord(entry.path, "skipped", reason="changed_while_collected")
                parts.append(chunk)
        except SandboxError:
            return ArtifactRecord(entry.path, "skipped", reason="unreadable")
        return await packer.add(entry.path, b"".join(parts))

    async def _copy(
        self, build_id: str, sandbox: Sandbox, entry: WorkspaceEntry, key: str
    ) -> ArtifactRecord:
        """Copy one file to blob ``key``, hashing on the way. A file that is unreadable,
        or larger than when it was listed (still being written), is skipped."""
        digest = hashlib.sha256()
        size = 0
        handle: BinaryIO | None = None
        pending: bytes | None = None

        def opener() -> BinaryIO:
            return self.blobs.open_write(build_id, key)

        try:
            async for chunk in sandbox.read_file(entry.path, chunk_size=CHUNK):
                size += len(chunk)
                if size > entry.size:
                    raise _GrewWhileCopied
                if pending is not None:
                    handle = await asyncio.to_thread(_write, handle, opener, pending, digest, False)
                pending = chunk
            handle = await asyncio.to_thread(_write, handle, opener, pending or b"", digest, True)
        except (SandboxError, _GrewWhileCopied) as exc:
            if handle is not None:
                await asyncio.to_thread(handle.close)
            await asyncio.to_thread(self.blobs.remove, build_id, key)
            reason = (
                "changed_while_collected" if isinstance(exc, _GrewWhileCopied) else "unreadable"
            )
            return ArtifactRecord(entry.path, "skipped", reason=reason)
        except BaseException:
            if handle is not None:
                with swallowed(log, f"closing artifact {entry.path}"):
                    handle.close()
            raise
        return ArtifactRecord(entry.path, "file", size=size, sha256=digest.hexdigest(), blob=key)


def _record_of(entry: WorkspaceEntry) -> ArtifactRecord | None:
    """The manifest record of a selected entry that is not copied, or None for a file to
    copy."""
    problem = _problem(entry.path)
    if problem is not None:
        return ArtifactRecord(_printable(entry.path), "skipped", reason=problem)
    if entry.kind == "symlink":
        target = _link_target(entry.path, entry.target)
        reason = None if target is not None else "points_outside_workspace"
        return ArtifactRecord(entry.path, "link", target=target, reason=reason)
    if entry.kind != "file":
        return ArtifactRecord(entry.path, "skipped", reason="not_a_regular_file")
    return None

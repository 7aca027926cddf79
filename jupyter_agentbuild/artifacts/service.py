"""ArtifactService: what the API can ask of artifacts, owner-scoped, plus retention.

Handlers call one method here each. Every method takes the caller's ``owner`` and looks
the build up through :class:`~jupyter_agentbuild.service.BuildService`, so another
owner's build answers 404 exactly like a missing one. Only paths that are entries of the
build's manifest are ever served: a request path is validated (no absolute path, no
``.`` / ``..`` / empty segment, no NUL or backslash: 400) and then looked up in the
database (404); it never becomes a file-system path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from jupyter_core.paths import jupyter_data_dir
from traitlets import Float, Int, Unicode, default
from traitlets.config import LoggingConfigurable

from ..entries import iso, utcnow
from ..errors import Conflict, NotFound, SpecError
from ..service import BuildService
from ..store.artifacts import ArtifactRecords
from ..store.repository import BuildRow
from ..vocabulary import TERMINAL
from .archive import READ_CHUNK, in_thread, tar_gz_stream, zip_stream
from .blobs import ArtifactStore, BlobMissing, LocalArtifactStore
from .http import content_type, slug

log = logging.getLogger(__name__)

FORMATS = {"zip": "application/zip", "tar.gz": "application/gzip"}


@dataclass(frozen=True)
class ArtifactFile:
    build_id: str
    path: str
    size: int
    sha256: str
    blob: str
    offset: int = 0  # where the bytes start in the blob (small files share pack blobs)

    @property
    def content_type(self) -> str:
        return content_type(self.path)


@dataclass
class Archive:
    filename: str
    content_type: str
    length: int | None
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True)
class StaticTarget:
    """What the static preview answers: a file (with a status), or a redirect."""

    file: ArtifactFile | None = None
    status: int = 200
    redirect: str | None = None


@dataclass
class SweepReport:
    expired: list[str] = field(default_factory=list)
    owner_quota: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)


def check_path(path: str) -> str:
    """A request path that may name a manifest entry, or 400 (``invalid_path``)."""
    if not path or "\x00" in path or "\\" in path or path.startswith("/"):
        raise SpecError(
            "the artifact path must be relative, without NUL or backslash",
            field="path",
            code="invalid_path",
        )
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise SpecError(
            "the artifact path may not contain '.', '..' or empty segments",
            field="path",
            code="invalid_path",
        )
    return path


class ArtifactService(LoggingConfigurable):
    """Artifacts for the API, and the retention sweep; configured as ``c.ArtifactService.*``."""

    root = Unicode(
        help="""Directory holding collected artifacts, one sub-directory per build. Default:
        <jupyter data dir>/agentbuild/artifacts. Servers sharing a database must share it
        too. Env fallback: AGENTBUILD_ARTIFACTS_ROOT.""",
    ).tag(config=True, legacy="artifacts_root")

    @default("root")
    def _root_default(self) -> str:
        env = os.environ.get("AGENTBUILD_ARTIFACTS_ROOT")
        return env or str(Path(jupyter_data_dir()) / "agentbuild" / "artifacts")

    retention_days = Float(
        30.0,
        help="""Days a build's artifacts are kept after collection (default 30); the
        periodic sweep removes older ones (the build and its logs stay). 0: forever.""",
    ).tag(config=True, legacy="artifact_retention_days")
    max_bytes_per_owner = Int(
        0,
        help="""Artifact bytes one owner may keep; the sweep removes the owner's oldest
        artifacts beyond it. Default 0: no limit.""",
    ).tag(config=True, legacy="max_artifact_bytes_per_owner")
    sweep_interval = Float(
        3600.0,
        help="""Seconds between retention sweeps (the first runs at start-up).
        0: no periodic sweep.""",
    ).tag(config=True, legacy="artifact_sweep_interval")

    #: The owner-scoped build lookup. Set by the extension once the build service exists:
    #: that needs the sandbox catalog, which needs :attr:`root` first (to hide it from builds).
    builds: BuildService

    def __init__(
        self, records: ArtifactRecords, blobs: ArtifactStore | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.records = records
        #: Where the bytes are (default: the local directory :attr:`root`).
        self.blobs: ArtifactStore = blobs or LocalArtifactStore(Path(self.root))
        self.sweeps = 0
        self._swept = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    # -- reading -------------------------------------------------------------------------

    async def _build(self, owner: str, build_id: str) -> BuildRow:
        row = await self.builds.get(owner, build_id)
        if row.status not in TERMINAL and row.spec.get("artifacts") and row.artifacts is None:
            raise Conflict(
                f"build {build_id} has not collected its artifacts yet ({row.status})",
                code="artifacts_not_ready",
            )
        return row

    async def manifest(self, owner: str, build_id: str) -> dict[str, Any]:
        """The contract's ``{"artifacts": [{"path", "size", "sha256"}], "total_size"}``,
        plus ``count``, ``truncated``, ``links``, ``skipped`` and ``removed``."""
        row = await self._build(owner, build_id)
        records = await self.records.records(build_id)
        files = [r for r in records if r.kind == "file"]
        summary = row.artifacts or {}
        return {
            "artifacts": [{"path": r.path, "size": r.size, "sha256": r.sha256} for r in files],
            "total_size": sum(r.size for r in files),
            "count": len(files),
            "truncated": bool(summary.get("truncated", False)),
            "links": [{"path": r.path, "target": r.target} for r in records if r.kind == "link"],
            "skipped": [
                {"path": r.path, "reason": r.reason} for r in records if r.kind == "skipped"
            ],
            "removed": summary.get("removed"),
        }

    async def file(self, owner: str, build_id: str, path: str) -> ArtifactFile:
        check_path(path)
        await self._build(owner, build_id)
        found = await self._file(build_id, path)
        if found is None:
            raise NotFound(f"build {build_id} has no artifact {path!r}")
        return found

    async def _file(self, build_id: str, path: str) -> ArtifactFile | None:
        record = await self.records.file(build_id, path)
        if record is None or record.blob is None:
            return None
        return ArtifactFile(
            build_id, record.path, record.size, record.sha256 or "", record.blob, record.offset
        )

    async def reader(
        self, item: ArtifactFile, start: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """``length`` bytes of the file from ``start`` (default: to its end), in chunks.
        The blob is opened before this returns (404 if it is gone)."""
        try:
            handle = await asyncio.to_thread(self.blobs.open_read, item.build_id, item.blob)
        except BlobMissing:
            raise NotFound(f"the stored bytes of {item.path!r} are gone") from None
        return self._chunks(handle, item, start, item.size - start if length is None else length)

    @staticmethod
    async def _chunks(
        handle: BinaryIO, item: ArtifactFile, start: int, remaining: int
    ) -> AsyncIterator[bytes]:
        try:
            if start or item.offset:
                await asyncio.to_thread(handle.seek, item.offset + start)
            while remaining > 0:
                chunk = await asyncio.to_thread(handle.read, min(READ_CHUNK, remaining))
                if not chunk:
                    raise OSError(f"{item.path}: the stored file is shorter than recorded")
                remaining -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)

    async def archive(self, owner: str, build_id: str, fmt: str) -> Archive:
        if fmt not in FORMATS:
            raise NotFound(f"no archive format {fmt!r}")
        row = await self._build(owner, build_id)
        files = await self.records.files(build_id)

        def open_blob(key: str) -> Any:
            return self.blobs.open_read(build_id, key)

        filename = f"agentbuild-{slug(row.name)}-{build_id}.{fmt}"
        if fmt == "zip":
            length, chunks = await asyncio.to_thread(zip_stream, files, open_blob)
            return Archive(filename, FORMATS[fmt], length, in_thread(chunks))
        mtime = (row.finished_at or row.created_at).timestamp()
        return Archive(
            filename, FORMATS[fmt], None, in_thread(tar_gz_stream(files, open_blob, mtime=mtime))
        )

    async def static(self, owner: str, build_id: str, path: str) -> StaticTarget:
        """The static-site view of a build's artifacts, rooted at the deepest directory
        holding them all (``dist/`` when only ``dist`` was collected): ``dir/`` serves
        ``dir/index.html``, ``dir`` redirects to ``dir/`` when that exists, a missing page
        serves the site's ``404.html`` (status 404) if it has one."""
        await self._build(owner, build_id)
        wanted = path + "index.html" if path == "" or path.endswith("/") else path
        check_path(wanted)
        root = await self.records.common_directory(build_id)
        found = await self._file(build_id, root + wanted)
        if found is not None:
            return StaticTarget(file=found)
        if not path.endswith("/") and await self._file(build_id, f"{root}{path}/index.html"):
            return StaticTarget(redirect=path.rsplit("/", 1)[-1] + "/")
        page = await self._file(build_id, root + "404.html")
        if page is not None:
            return StaticTarget(file=page, status=404)
        raise NotFound(f"build {build_id} has no artifact {wanted!r}")

    # -- removal -------------------------------------------------------------------------

    async def forget(self, build_id: str) -> None:
        """A deleted build: drop its manifest and its blobs."""
        await self.records.delete(build_id)
        await asyncio.to_thread(self.blobs.remove_build, build_id)

    async def _remove(self, build_id: str, reason: str, now: datetime) -> bool:
        summary = {"count": 0, "total_size": 0, "removed": reason, "removed_at": iso(now)}
        if not await self.records.mark_removed(build_id, reason=reason, now=now, summary=summary):
            return False
        await asyncio.to_thread(self.blobs.remove_build, build_id)
        return True

    async def sweep(self, now: datetime | None = None) -> SweepReport:
        """Remove expired artifacts, then the oldest of owners over their cap, then blobs
        no build needs. Build records and logs stay."""
        now = now or utcnow()
        report = SweepReport()
        days = self.retention_days
        if days > 0:
            for item in await self.records.expired(now - timedelta(days=days)):
                if await self._remove(item.build_id, "expired", now):
                    report.expired.append(item.build_id)
        cap = self.max_bytes_per_owner
        if cap > 0:
            for owner in await self.records.owners_over(cap):
                kept = await self.records.kept_sets(owner)
                total = sum(item.total_size for item in kept)
                for item in reversed(kept):  # oldest first
                    if total <= cap:
                        break
                    if await self._remove(item.build_id, "owner_quota", now):
                        report.owner_quota.append(item.build_id)
                    total -= item.total_size
        stored = await asyncio.to_thread(self.blobs.build_ids)
        for build_id in sorted(await self.records.without_artifacts(stored)):
            await asyncio.to_thread(self.blobs.remove_build, build_id)
            report.orphans.append(build_id)
        return report

    # -- the periodic sweep --------------------------------------------------------------

    def start(self) -> None:
        if self._task is None and self.sweep_interval > 0:
            self._task = asyncio.create_task(self._sweep_loop(), name="agentbuild-artifact-sweep")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_for_sweeps(self, count: int) -> None:
        """Return once ``count`` periodic sweeps have run (for tests and benchmarks)."""
        async with self._swept:
            await self._swept.wait_for(lambda: self.sweeps >= count)

    async def _sweep_loop(self) -> None:
        while True:
            try:
                report = await self.sweep()
                if report.expired or report.owner_quota or report.orphans:
                    log.info(
                        "agentbuild: artifact sweep removed %d expired, %d over quota, %d orphaned",
                        len(report.expired),
                        len(report.owner_quota),
                        len(report.orphans),
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("agentbuild: artifact sweep failed: %s", exc)
            async with self._swept:
                self.sweeps += 1
                self._swept.notify_all()
            await asyncio.sleep(self.sweep_interval)

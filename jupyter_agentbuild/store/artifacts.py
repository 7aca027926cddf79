"""Artifact manifests and totals: every artifact query, on SQLite or PostgreSQL.

The bytes are elsewhere (``jupyter_agentbuild.artifacts.blobs``); these tables say which
blob holds which path, and how much each owner keeps, for the retention sweep.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..vocabulary import ACTIVE
from .engine import transaction
from .schema import artifact_files, artifact_sets, builds

_INSERT_BATCH = 2000
_IN_BATCH = 500


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """One manifest row: ``kind`` is "file", "link" or "skipped"."""

    path: str
    kind: str
    size: int = 0
    sha256: str | None = None
    blob: str | None = None
    target: str | None = None
    reason: str | None = None
    offset: int = 0  # where the file's bytes start in ``blob``


@dataclass(frozen=True, slots=True)
class ArtifactSet:
    """A build's collected artifacts, as a whole."""

    build_id: str
    owner: str
    created_at: datetime
    file_count: int
    total_size: int
    truncated: bool
    removed_at: datetime | None
    removed_reason: str | None


def _record(row: Row[Any]) -> ArtifactRecord:
    m = row._mapping
    return ArtifactRecord(
        path=m["path"],
        kind=m["kind"],
        size=int(m["size"] or 0),
        sha256=m["sha256"],
        blob=m["blob"],
        target=m["target"],
        reason=m["reason"],
        offset=int(m["blob_offset"] or 0),
    )


def _set(row: Row[Any]) -> ArtifactSet:
    return ArtifactSet(**row._mapping)


async def _delete_manifest(conn: AsyncConnection, build_id: str) -> None:
    """Drop a build's manifest rows and totals (inside the caller's transaction)."""
    await conn.execute(delete(artifact_files).where(artifact_files.c.build_id == build_id))
    await conn.execute(delete(artifact_sets).where(artifact_sets.c.build_id == build_id))


class ArtifactRecords:
    """Queries of ``artifact_sets`` / ``artifact_files`` (and ``builds.artifacts``)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def save(
        self,
        build_id: str,
        *,
        owner: str,
        created_at: datetime,
        records: Sequence[ArtifactRecord],
        truncated: bool,
        summary: dict[str, Any],
    ) -> None:
        """Store a build's manifest and totals, and its Build ``artifacts`` summary, in one
        transaction (replacing any earlier manifest of the build)."""
        files = [r for r in records if r.kind == "file"]
        rows = [
            {
                "build_id": build_id,
                "position": position,
                "path": r.path,
                "kind": r.kind,
                "size": r.size,
                "sha256": r.sha256,
                "blob": r.blob,
                "blob_offset": r.offset,
                "target": r.target,
                "reason": r.reason,
            }
            for position, r in enumerate(records)
        ]
        async with transaction(self.engine) as conn:
            await _delete_manifest(conn, build_id)
            for start in range(0, len(rows), _INSERT_BATCH):
                await conn.execute(insert(artifact_files), rows[start : start + _INSERT_BATCH])
            await conn.execute(
                insert(artifact_sets).values(
                    build_id=build_id,
                    owner=owner,
                    created_at=created_at,
                    file_count=len(files),
                    total_size=sum(r.size for r in files),
                    truncated=truncated,
                )
            )
            await conn.execute(
                update(builds).where(builds.c.id == build_id).values(artifacts=summary)
            )

    async def records(self, build_id: str) -> list[ArtifactRecord]:
        """The build's manifest, in order (empty when nothing was collected)."""
        stmt = (
            select(artifact_files)
            .where(artifact_files.c.build_id == build_id)
            .order_by(artifact_files.c.position)
        )
        async with transaction(self.engine) as conn:
            return [_record(row) for row in await conn.execute(stmt)]

    async def files(self, build_id: str) -> list[ArtifactRecord]:
        """The collected files, in manifest order, with only what reading them needs
        (path, size, blob, offset): archives of many files stay small in memory."""
        c = artifact_files.c
        stmt = (
            select(c.path, c.size, c.blob, c.blob_offset)
            .where(c.build_id == build_id, c.kind == "file")
            .order_by(c.position)
        )
        async with transaction(self.engine) as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            ArtifactRecord(path, "file", size=int(size), blob=blob, offset=int(offset))
            for path, size, blob, offset in rows
        ]

    async def file(self, build_id: str, path: str) -> ArtifactRecord | None:
        """The manifest row of a collected file at exactly ``path``, or None."""
        stmt = select(artifact_files).where(
            artifact_files.c.build_id == build_id,
            artifact_files.c.path == path,
            artifact_files.c.kind == "file",
        )
        async with transaction(self.engine) as conn:
            row = (await conn.execute(stmt)).one_or_none()
        return None if row is None else _record(row)

    async def common_directory(self, build_id: str) -> str:
        """The deepest directory holding every collected file ("" or ``"dir/"``): the
        common prefix of the smallest and largest path is that of all of them."""
        c = artifact_files.c
        stmt = select(func.min(c.path), func.max(c.path)).where(
            c.build_id == build_id, c.kind == "file"
        )
        async with transaction(self.engine) as conn:
            low, high = (await conn.execute(stmt)).one()
        if low is None or high is None:
            return ""
        size = 0
        while size < min(len(low), len(high)) and low[size] == high[size]:
            size += 1
        return str(low[:size]).rpartition("/")[0] + "/" if "/" in low[:size] else ""

    async def get_set(self, build_id: str) -> ArtifactSet | None:
        stmt = select(artifact_sets).where(artifact_sets.c.build_id == build_id)
        async with transaction(self.engine) as conn:
            row = (await conn.execute(stmt)).one_or_none()
        return None if row is None else _set(row)

    async def expired(self, cutoff: datetime) -> list[ArtifactSet]:
        """Sets still kept that were collected before ``cutoff``, oldest first."""
        c = artifact_sets.c
        stmt = (
            select(artifact_sets)
            .where(c.removed_at.is_(None), c.created_at < cutoff)
            .order_by(c.created_at)
        )
        async with transaction(self.engine) as conn:
            return [_set(row) for row in await conn.execute(stmt)]

    async def owners_over(self, cap: int) -> list[str]:
        """Owners whose kept artifacts add up to more than ``cap`` bytes."""
        c = artifact_sets.c
        stmt = (
            select(c.owner)
            .where(c.removed_at.is_(None))
            .group_by(c.owner)
            .having(func.sum(c.total_size) > cap)
            .order_by(c.owner)
        )
        async with transaction(self.engine) as conn:
            return list((await conn.scalars(stmt)).all())

    async def kept_sets(self, owner: str) -> list[ArtifactSet]:
        """``owner``'s sets still kept, newest first."""
        c = artifact_sets.c
        stmt = (
            select(artifact_sets)
            .where(c.owner == owner, c.removed_at.is_(None))
            .order_by(c.created_at.desc(), c.build_id.desc())
        )
        async with transaction(self.engine) as conn:
            return [_set(row) for row in await conn.execute(stmt)]

    async def mark_removed(
        self, build_id: str, *, reason: str, now: datetime, summary: dict[str, Any]
    ) -> bool:
        """Forget a kept set's manifest (its blobs are removed next). Returns False when
        another server already did: exactly one of them removes the blobs."""
        c = artifact_sets.c
        async with transaction(self.engine) as conn:
            done = await conn.execute(
                update(artifact_sets)
                .where(c.build_id == build_id, c.removed_at.is_(None))
                .values(removed_at=now, removed_reason=reason)
            )
            if done.rowcount != 1:
                return False
            await conn.execute(delete(artifact_files).where(artifact_files.c.build_id == build_id))
            await conn.execute(
                update(builds).where(builds.c.id == build_id).values(artifacts=summary)
            )
        return True

    async def without_artifacts(self, build_ids: Iterable[str]) -> set[str]:
        """Those of ``build_ids`` whose blobs nobody needs: no build record any more, or a
        finished build without a kept set (removed, or a collection that failed)."""
        ids = list(build_ids)
        keep: set[str] = set()
        for start in range(0, len(ids), _IN_BATCH):
            batch = ids[start : start + _IN_BATCH]
            stmt = (
                select(builds.c.id)
                .select_from(
                    builds.outerjoin(artifact_sets, artifact_sets.c.build_id == builds.c.id)
                )
                .where(
                    builds.c.id.in_(batch),
                    or_(
                        and_(
                            artifact_sets.c.build_id.is_not(None),
                            artifact_sets.c.removed_at.is_(None),
                        ),
                        builds.c.status.in_(ACTIVE),  # collecting now, maybe
                    ),
                )
            )
            async with transaction(self.engine) as conn:
                keep.update((await conn.scalars(stmt)).all())
        return set(ids) - keep

    async def delete(self, build_id: str) -> None:
        """Drop the build's manifest and totals (the build itself stays)."""
        async with transaction(self.engine) as conn:
            await _delete_manifest(conn, build_id)

"""store/artifacts.py: manifests and totals, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from jupyter_agentbuild.store import BuildRow, Store
from jupyter_agentbuild.store.artifacts import ArtifactRecord, ArtifactRecords
from tests.store.conftest import T0

Run = Callable[[Awaitable[Any]], Any]
MakeBuild = Callable[..., Awaitable[BuildRow]]


def _files(*specs: tuple[str, int]) -> list[ArtifactRecord]:
    return [
        ArtifactRecord(path, "file", size=size, sha256="0" * 64, blob="pack-00000", offset=i)
        for i, (path, size) in enumerate(specs)
    ]


def test_save_read_and_replace_a_manifest(store: Store, run: Run, make_build: MakeBuild) -> None:
    records = ArtifactRecords(store.engine)

    async def main() -> None:
        build = await make_build(status="succeeded")
        big = 5 * 2**31  # sizes beyond 32 bits
        manifest = [
            *_files(("dist/a.js", 3), ("dist/big.bin", big)),
            ArtifactRecord("dist/passwd", "link", reason="points_outside_workspace"),
            ArtifactRecord("dist/pipe", "skipped", reason="not_a_regular_file"),
        ]
        summary = {"count": 2, "total_size": big + 3, "truncated": False}
        await records.save(
            build.id,
            owner="alice",
            created_at=T0,
            records=manifest,
            truncated=False,
            summary=summary,
        )
        assert await records.records(build.id) == manifest
        assert await records.file(build.id, "dist/big.bin") == manifest[1]
        assert await records.file(build.id, "dist/passwd") is None  # links are no files
        assert await records.file(build.id, "dist/nope") is None
        assert await records.common_directory(build.id) == "dist/"
        row = await store.get_build(build.id)
        assert row is not None and row.artifacts == summary
        saved = await records.get_set(build.id)
        assert saved is not None and saved.total_size == big + 3 and saved.file_count == 2
        # Saving again replaces the manifest (a retried collection).
        await records.save(
            build.id,
            owner="alice",
            created_at=T0,
            records=_files(("x", 1)),
            truncated=True,
            summary={"count": 1},
        )
        assert [r.path for r in await records.records(build.id)] == ["x"]
        assert await records.common_directory(build.id) == ""
        # Deleting the build takes its manifest and totals with it.
        assert await store.delete_build(build.id)
        assert await records.records(build.id) == [] and await records.get_set(build.id) is None

    run(main())


def test_retention_queries(store: Store, run: Run, make_build: MakeBuild) -> None:
    records = ArtifactRecords(store.engine)

    async def main() -> None:
        made: dict[str, BuildRow] = {}
        for name, owner, size, days in [
            ("a1", "alice", 600, 10),
            ("a2", "alice", 600, 5),
            ("b1", "bob", 100, 9),
        ]:
            made[name] = await make_build(owner=owner, status="succeeded")
            await records.save(
                made[name].id,
                owner=owner,
                created_at=T0 - timedelta(days=days),
                records=_files(("f", size)),
                truncated=False,
                summary={"count": 1, "total_size": size},
            )
        a1, a2, b1 = made["a1"].id, made["a2"].id, made["b1"].id
        expired = await records.expired(T0 - timedelta(days=8))
        assert [s.build_id for s in expired] == [a1, b1]  # oldest first
        assert await records.owners_over(1000) == ["alice"]
        assert [s.build_id for s in await records.kept_sets("alice")] == [a2, a1]
        assert await records.without_artifacts([a1, a2, b1, "gone"]) == {"gone"}

        summary = {"count": 0, "removed": "expired"}
        assert await records.mark_removed(a1, reason="expired", now=T0, summary=summary)
        assert not await records.mark_removed(a1, reason="expired", now=T0, summary=summary)
        assert await records.records(a1) == []
        row = await store.get_build(a1)
        assert row is not None and row.artifacts == summary
        assert await records.owners_over(1000) == []
        assert [s.build_id for s in await records.expired(T0)] == [b1, a2]
        assert await records.without_artifacts([a1, a2, b1]) == {a1}
        collecting = await make_build(status="running")
        failed = await make_build(status="failed")  # its collection failed: no set
        assert await records.without_artifacts([collecting.id, failed.id]) == {failed.id}

    run(main())

"""A list of builds reads their specs a bounded batch at a time and transforms each one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import event, update

import jupyter_agentbuild.store.repository as repository
from jupyter_agentbuild.store.repository import BuildRow, Store
from jupyter_agentbuild.store.schema import builds

Run = Callable[[Awaitable[Any]], Any]
MakeBuild = Callable[..., Awaitable[BuildRow]]


def test_specs_are_read_in_bounded_batches_and_transformed(
    store: Store, make_build: MakeBuild, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = "x" * 5000

    async def main() -> list[BuildRow]:
        for n in range(1, 8):
            row = await make_build()
            if n % 2 == 0:  # every other spec is large
                async with store.engine.begin() as conn:
                    spec = {"steps": ["true"], "files": {"f": big}, "n": n}
                    await conn.execute(
                        update(builds).where(builds.c.id == row.id).values(spec=spec)
                    )
        return await store.list_builds("alice", limit=10, spec=summary)

    def summary(spec: Any) -> Any:
        return {"n": spec["n"], "had_files": "files" in spec}

    spec_reads: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "builds.spec" in statement and "builds.pk IN" in statement:
            spec_reads.append(statement)

    monkeypatch.setattr(repository, "_SPEC_BATCH", 6000)  # about one large spec per read
    event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    try:
        rows = run(main())
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", count)
    assert [r.spec for r in rows] == [{"n": n, "had_files": n % 2 == 0} for n in range(7, 0, -1)]
    # batched (fewer reads than builds), and never two large specs in one read
    assert 3 <= len(spec_reads) < 7, len(spec_reads)

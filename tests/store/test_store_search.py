"""The builds list's name search, on SQLite and PostgreSQL: the same rows on both (case
ignored, LIKE's wildcards literal, other owners' builds never found)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from jupyter_agentbuild.store import BuildRow, Store

Run = Callable[[Awaitable[Any]], Any]
MakeBuild = Callable[..., Awaitable[BuildRow]]


def test_search_matches_name_or_id_ignoring_case(
    store: Store, make_build: MakeBuild, run: Run
) -> None:
    async def main() -> dict[str, list[str | None]]:
        for name in ["Web-App", "web_docs", "100% api", "a/b\\c", "other"]:
            row = await make_build()
            await store.update_build(row.id, name=name)
        await make_build(owner="bob", name="web of bob")
        found = {}
        for q in ["WEB", "%", "_", "b_d", "/", "\\", "nothing"]:
            rows = await store.list_builds("alice", search=q, limit=10)
            found[q] = [r.name for r in rows]
        rows = await store.list_builds("alice", search=row.id[1:6].upper(), limit=10)
        found["id"] = [r.name for r in rows]
        return found

    assert run(main()) == {
        "WEB": ["web_docs", "Web-App"],
        "%": ["100% api"],
        "_": ["web_docs"],
        "b_d": ["web_docs"],
        "/": ["a/b\\c"],
        "\\": ["a/b\\c"],
        "nothing": [],
        "id": ["other"],
    }

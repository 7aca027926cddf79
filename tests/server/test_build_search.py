"""``GET agentbuild/api/builds?q=``: the name search runs on the server, over every build
(not only the page a panel has loaded), and composes with the status filter and the cursor.
"""

from __future__ import annotations

from typing import Any

from jupyter_agentbuild.client import AsyncClient
from tests.conftest import Api


async def names(api: Api, **params: Any) -> tuple[list[str | None], Any]:
    code, page, _ = await api.call("GET", "builds", params=params)
    assert code == 200, page
    return [b["name"] for b in page["builds"]], page["next"]


async def test_search_by_name_or_id_ignores_case_and_composes(api: Api) -> None:
    made = {}
    for name, step in [
        ("Frontend-Docs", "true"),
        ("backend", "true"),
        ("docs_site", "true"),
        ("50%_done", "true"),
        ("docs-broken", "exit 3"),
    ]:
        made[name] = (await api.create({"name": name, "steps": [step]}))["id"]
    for build_id in made.values():
        await api.finish(build_id)

    # newest first, case ignored on both sides
    assert (await names(api, q="DOCS"))[0] == ["docs-broken", "docs_site", "Frontend-Docs"]
    assert (await names(api, q="end"))[0] == ["backend", "Frontend-Docs"]
    # LIKE's wildcards are taken literally
    assert (await names(api, q="%"))[0] == ["50%_done"]
    assert (await names(api, q="s_s"))[0] == ["docs_site"]
    assert (await names(api, q="_"))[0] == ["50%_done", "docs_site"]
    # an id, or part of it, finds its build
    backend = made["backend"]
    assert (await names(api, q=backend[2:10].upper()))[0] == ["backend"]
    # with the status filter, and page by page through the cursor
    assert (await names(api, q="docs", status="failed"))[0] == ["docs-broken"]
    assert (await names(api, q="docs", status="succeeded,running"))[0] == [
        "docs_site",
        "Frontend-Docs",
    ]
    first, cursor = await names(api, q="docs", limit=2)
    assert first == ["docs-broken", "docs_site"] and isinstance(cursor, int)
    rest, cursor = await names(api, q="docs", limit=2, before=cursor)
    assert rest == ["Frontend-Docs"] and cursor is None
    # no match, and an empty q (no filter)
    assert await names(api, q="nothing-like-it") == ([], None)
    assert len((await names(api, q=""))[0]) == 5

    async with AsyncClient() as client:  # found through JPY_AGENTBUILD_URL / _TOKEN
        assert [b.name for b in await client.list(q="Docs")] == [
            "docs-broken",
            "docs_site",
            "Frontend-Docs",
        ]
        found = await client.list(q="docs", status="succeeded", limit=1)
        assert [b.name for b in found] == ["docs_site"]


async def test_bad_search_is_a_400_in_the_contracts_shape(api: Api) -> None:
    for q in ["x" * 201, "tab\there", "new\nline"]:
        code, body, _ = await api.call("GET", "builds", params={"q": q})
        assert code == 400, (q, body)
        error = body["error"]
        assert error["code"] == "invalid_query" and error["field"] == "q"
        assert "Traceback" not in error["message"]
    code, body, _ = await api.call("GET", "builds", params={"q": "x" * 200})
    assert code == 200 and body["builds"] == []

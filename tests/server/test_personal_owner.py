"""On a personal (token) server every request has the same owner, cookie or not."""

from __future__ import annotations

from jupyter_agentbuild.identity import server_user
from tests.conftest import Api


async def test_token_requests_share_one_stable_owner(api: Api) -> None:
    first = await api.create({"steps": ["true"]})
    second = await api.create({"steps": ["true"]})
    assert first["owner"] == second["owner"] == server_user()
    _, page, _ = await api.call("GET", "builds")
    assert {b["id"] for b in page["builds"]} == {first["id"], second["id"]}

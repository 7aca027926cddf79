"""Two users on one server never see each other's builds; personal servers have one owner."""

from __future__ import annotations

from typing import Any

import pytest
from traitlets.config import Config

from tests.conftest import Api, as_user, multi_user_config


@pytest.fixture
def jp_server_config(agentbuild_config: dict[str, Any]) -> Config:
    return multi_user_config(agentbuild_config)


async def test_owners_cannot_see_each_other(api: Api) -> None:
    code, alice_build, _ = await api.call(
        "POST", "builds", {"steps": ["echo a"]}, headers=as_user("alice")
    )
    assert code == 201 and alice_build["owner"] == "alice"
    code, bob_build, _ = await api.call(
        "POST", "builds", {"steps": ["echo b"]}, headers=as_user("bob")
    )
    assert code == 201 and bob_build["owner"] == "bob"
    bob = as_user("bob")
    aid = alice_build["id"]
    for method, path in [
        ("GET", f"builds/{aid}"),
        ("GET", f"builds/{aid}/logs"),
        ("POST", f"builds/{aid}/cancel"),
        ("DELETE", f"builds/{aid}"),
    ]:
        code, body, _ = await api.call(method, path, headers=bob)
        assert code == 404 and body["error"]["code"] == "not_found", (method, path)
    _, page, _ = await api.call("GET", "builds", headers=bob)
    assert [b["id"] for b in page["builds"]] == [bob_build["id"]]
    with pytest.raises(Exception) as info:
        await api.ws_fetch("agentbuild", "api", "builds", aid, "stream", headers=bob)
    assert getattr(info.value, "code", None) == 404
    ws = await api.ws_fetch("agentbuild", "api", "builds", aid, "stream", headers=as_user("alice"))
    frames = []
    while (msg := await ws.read_message()) is not None:
        frames.append(msg)
    assert ws.close_code == 1000 and frames
    code, _, _ = await api.call("GET", "builds", headers={})
    assert code == 403

"""Another owner's artifacts are invisible: every endpoint answers 404, as for no build."""

from __future__ import annotations

from typing import Any

import pytest
from traitlets.config import Config

from tests.artifacts.conftest import Http
from tests.conftest import Api, as_user, multi_user_config

API = "agentbuild/api/builds"


@pytest.fixture
def jp_server_config(agentbuild_config: dict[str, Any]) -> Config:
    return multi_user_config(agentbuild_config)


async def test_another_owner_gets_404_everywhere(api: Api, http: Http, preview: str) -> None:
    alice = as_user("alice")
    code, build, _ = await api.call(
        "POST",
        "builds",
        {"steps": ["mkdir s && echo '<h1>a</h1>' > s/index.html"], "artifacts": {"paths": ["s"]}},
        headers=alice,
    )
    assert code == 201
    ws = await api.ws_fetch("agentbuild", "api", "builds", build["id"], "stream", headers=alice)
    while await ws.read_message() is not None:
        pass
    bid = build["id"]
    paths = [
        f"{API}/{bid}/artifacts",
        f"{API}/{bid}/artifacts/s/index.html",
        f"{API}/{bid}/artifacts.zip",
        f"{API}/{bid}/artifacts.tar.gz",
        f"{preview}/{bid}/",
        f"{preview}/{bid}/index.html",
    ]
    for path in paths:
        mine = await http.get(path, alice)
        assert mine.code == 200, path
        theirs = await http.get(path, as_user("bob"))
        assert theirs.code == 404, path
        assert theirs.json()["error"]["code"] == "not_found"
        assert b"<h1>a</h1>" not in theirs.path.read_bytes()
    code, _, _ = await api.call("DELETE", f"builds/{bid}", headers=as_user("bob"))
    assert code == 404
    still = await http.get(f"{API}/{bid}/artifacts/s/index.html", alice)
    assert still.code == 200 and still.path.read_bytes() == b"<h1>a</h1>\n"

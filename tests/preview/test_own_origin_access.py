"""Who obtains a preview's own-origin URL, and what answers at a preview host when
Jupyter accepts any host (``allow_remote_access``): the owner only; nothing of Jupyter."""

from __future__ import annotations

import json
from typing import Any

import pytest
from traitlets.config import Config

from tests.conftest import as_user, multi_user_config
from tests.preview.conftest import Previews


@pytest.fixture
def jp_server_config(agentbuild_config: dict[str, Any]) -> Config:
    config = multi_user_config(agentbuild_config)
    config.ServerApp.allow_remote_access = True  # Jupyter's host check is off
    return config


async def test_only_the_owner_obtains_the_url(previews: Previews) -> None:
    alice, bob = as_user("alice"), as_user("bob")
    build = await previews.start(headers=alice)
    bid = build["id"]
    url = build["preview"]["url"]
    assert ".localhost:" in url
    code, body, _ = await previews.api.call("GET", f"builds/{bid}", headers=bob)
    assert code == 404 and url not in json.dumps(body)
    code, listed, _ = await previews.api.call("GET", "builds", headers=bob)
    assert code == 200 and url not in json.dumps(listed)
    # The capability alone opens it (no Jupyter identity: a fresh browser)
    host = previews.own_host(build)
    page = await previews.own(host, "/tiny")
    assert page.code == 200 and page.body == b"ok"


async def test_jupyter_never_answers_at_a_preview_host(previews: Previews) -> None:
    """Jupyter would serve any host here; a label-shaped host is still never Jupyter's,
    with or without credentials, live label or not."""
    alice = as_user("alice")
    build = await previews.start(headers=alice)
    live = previews.own_host(build)
    label, rest = live.split(".", 1)
    dead = f"p{'0' * 16}-{'a' * 26}.{rest}"
    auth = {**previews.auth, **alice}
    for host in (dead, live):
        for target in ("/api/status", "/api/contents", "/agentbuild/api/builds", "/lab"):
            answer = await previews.own(host, target, headers=auth)
            assert answer.code == 404, (host, target, answer.code)
            assert b"jupyter" not in answer.body.lower() and b"version" not in answer.body
    # while Jupyter itself does answer at another host
    status = await previews.own(
        "jupyter.example.org", f"{previews.base_url}api/status", headers=auth
    )
    assert status.code == 200 and b"started" in status.body

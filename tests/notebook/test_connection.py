"""Finding the server from a kernel's environment, and keeping its token out of sight."""

from __future__ import annotations

import pytest

from jupyter_agentbuild.client import AsyncClient, Client, ServerNotFound, resolve_server
from jupyter_agentbuild.client.connection import ServerInfo

TOKEN = "tok-secret-123"


def test_jupyter_server_variables() -> None:
    env = {"JPY_AGENTBUILD_URL": "http://127.0.0.1:8888/user/a/", "JPY_AGENTBUILD_TOKEN": TOKEN}
    info = resolve_server(env=env)
    assert info.url == "http://127.0.0.1:8888/user/a/"
    assert info.token == TOKEN
    assert info.source == "JPY_AGENTBUILD_URL"
    assert info.api_url == "http://127.0.0.1:8888/user/a/agentbuild/api/"
    assert info.ws_api_url == "ws://127.0.0.1:8888/user/a/agentbuild/api/"
    assert info.base_path == "/user/a/"
    assert info.auth_headers() == {"Authorization": f"token {TOKEN}"}


def test_user_overrides_win_and_never_get_the_servers_token() -> None:
    env = {
        "AGENTBUILD_URL": "https://other.example/base",
        "JPY_AGENTBUILD_URL": "http://127.0.0.1:8888/",
        "JPY_AGENTBUILD_TOKEN": TOKEN,
    }
    info = resolve_server(env=env)
    assert info.url == "https://other.example/base/"
    assert info.token == ""  # the server's token stays with the server's URL
    assert info.ws_api_url.startswith("wss://other.example/base/")
    env["AGENTBUILD_TOKEN"] = "mine"
    assert resolve_server(env=env).token == "mine"
    only_token = {"AGENTBUILD_TOKEN": "mine", "JPY_AGENTBUILD_URL": "http://h:1/"}
    assert resolve_server(env=only_token).token == "mine"


def test_jupyterhub_variables() -> None:
    env = {
        "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:45678/user/bob/",
        "JUPYTERHUB_API_TOKEN": TOKEN,
        "JUPYTERHUB_SERVICE_PREFIX": "/user/bob/",
    }
    info = resolve_server(env=env)
    assert (info.url, info.token) == ("http://127.0.0.1:45678/user/bob/", TOKEN)
    del env["JUPYTERHUB_SERVICE_URL"]
    info = resolve_server(env=env)
    assert info.url == "http://127.0.0.1:8888/user/bob/"
    assert info.source == "JUPYTERHUB_SERVICE_PREFIX"


def test_explicit_arguments_first() -> None:
    env = {"JPY_AGENTBUILD_URL": "http://127.0.0.1:8888/", "JPY_AGENTBUILD_TOKEN": TOKEN}
    assert resolve_server("http://h:9/", "t", env=env) == ServerInfo("http://h:9/", "t")


def test_nothing_found_says_how_to_fix_it() -> None:
    with pytest.raises(ServerNotFound) as info:
        resolve_server(env={})
    text = str(info.value)
    assert "AGENTBUILD_URL" in text and "jupyter server extension enable" in text
    with pytest.raises(ServerNotFound, match="not an http"):
        resolve_server(env={"AGENTBUILD_URL": "localhost:8888"})


def test_token_never_in_repr_or_browser_links() -> None:
    info = ServerInfo("http://127.0.0.1:8888/a%40b/", TOKEN)
    assert TOKEN not in repr(info)
    assert info.browser_path("preview", "b1") == "/a%40b/agentbuild/preview/b1"
    client = Client(server=info)
    try:
        assert TOKEN not in repr(client) and TOKEN not in repr(client.aio)
        assert TOKEN not in repr(AsyncClient(server=info))
    finally:
        client.close()

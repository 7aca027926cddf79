"""Inputs that once answered 500: each is a clean 4xx in the contract's shape now."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import Api


def _error(status: int, body: Any) -> dict[str, Any]:
    assert 400 <= status < 500, (status, body)
    assert "Traceback" not in json.dumps(body)
    error: dict[str, Any] = body["error"]
    assert error["code"] and error["message"]
    return error


@pytest.mark.parametrize("depth", [1_000, 100_000])
async def test_deeply_nested_json_is_400(api: Api, depth: int) -> None:
    body = '{"steps": ["true"], "env": ' + "[" * depth + "]" * depth + "}"
    status, data, _ = await api.call("POST", "builds", body)
    error = _error(status, data)
    assert status == 400 and error["code"] in ("invalid_json", "invalid_spec"), error


async def test_a_very_long_workspace_name_is_400(api: Api) -> None:
    status, data, _ = await api.call("POST", "builds", {"steps": ["true"], "workspace": "w" * 5000})
    error = _error(status, data)
    assert status == 400 and error["code"] == "invalid_path" and error["field"] == "workspace"


async def test_an_inline_file_3000_directories_deep_is_400(api: Api) -> None:
    path = "d/" * 3000 + "f.txt"
    status, data, _ = await api.call("POST", "builds", {"steps": ["true"], "files": {path: "x"}})
    error = _error(status, data)
    assert status == 400 and error["code"] == "invalid_path", error
    assert error["field"].startswith("files.")


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("builds", "before"),
        ("builds", "limit"),
        ("builds/0123456789abcdef/logs", "after"),
        ("builds/0123456789abcdef/logs", "limit"),
    ],
)
@pytest.mark.parametrize("value", ["99999999999999999999", "-99999999999999999999", "1e3", "١"])
async def test_out_of_range_integers_in_queries_are_400(
    api: Api, path: str, name: str, value: str
) -> None:
    status, data, _ = await api.call("GET", path, params={name: value})
    error = _error(status, data)
    if status == 400:
        assert error["code"] == "invalid_query" and error["field"] == name
    else:
        assert status == 404  # the build does not exist (checked after the query)


async def test_download_of_an_artifact_whose_name_holds_a_newline(api: Api) -> None:
    build = await api.create(
        {
            "steps": ["printf 'hello' > \"$(printf 'a\\nb.txt')\"; printf x > 'c\"d é.txt'"],
            "artifacts": {"paths": ["*.txt"]},
        }
    )
    done = await api.finish(build["id"])
    assert done["status"] == "succeeded", done
    code, manifest, _ = await api.call("GET", f"builds/{build['id']}/artifacts")
    names = sorted(a["path"] for a in manifest["artifacts"])
    assert names == ["a\nb.txt", 'c"d é.txt'], names
    for name, body in (("a\nb.txt", b"hello"), ('c"d é.txt', b"x")):
        response = await api.fetch(
            "agentbuild",
            "api",
            "builds",
            build["id"],
            "artifacts",
            name,
            params={"download": "1"},
            raise_error=False,
        )
        assert response.code == 200, (name, response.code, response.body)
        assert response.body == body
        disposition = response.headers["Content-Disposition"]
        assert disposition.startswith("attachment;") and "\n" not in disposition
        assert disposition.endswith("filename*=UTF-8''" + quote(name))


@pytest.mark.parametrize(
    "spec",
    [
        {"steps": ["true"], "timeout": 10**400},
        {"steps": [{"run": "true", "timeout": 10**309}]},
        {"steps": ["true"], "preview": {"command": "true", "ready_timeout": 10**400}},
    ],
)
async def test_integers_beyond_every_float_are_400(api: Api, spec: dict[str, Any]) -> None:
    status, data, _ = await api.call("POST", "builds", spec)
    error = _error(status, data)
    assert status == 400 and error["code"] == "invalid_timeout", error


async def test_a_plain_get_of_the_stream_is_a_json_400(api: Api) -> None:
    build = await api.create({"steps": ["true"]})
    status, data, _ = await api.call("GET", f"builds/{build['id']}/stream")
    error = _error(status, data)
    assert status == 400 and "WebSocket" in error["message"]

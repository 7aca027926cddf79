"""Bad input gets the contract's JSON error, authentication is required everywhere."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from tests.conftest import Api

BAD_SPECS: list[tuple[Any, str, str | None]] = [
    ([], "invalid_body", None),
    ({}, "missing_steps", "steps"),
    ({"steps": []}, "missing_steps", "steps"),
    ({"steps": [""]}, "invalid_spec", "steps[0].run"),
    ({"steps": [42]}, "invalid_spec", "steps[0]"),
    ({"steps": [{"run": "x", "bogus": 1}]}, "invalid_spec", "steps[0].bogus"),
    ({"steps": ["x"], "bogus": 1}, "unknown_field", "bogus"),
    ({"steps": ["x"], "name": 5}, "invalid_spec", "name"),
    ({"steps": ["x"], "provider": "docker"}, "invalid_provider", "provider"),
    ({"steps": ["x"], "workspace": "/etc"}, "invalid_path", "workspace"),
    ({"steps": ["x"], "workspace": "../x"}, "invalid_path", "workspace"),
    ({"steps": ["x"], "workspace": "missing-dir"}, "invalid_path", "workspace"),
    ({"steps": ["x"], "files": {"../evil": "x"}}, "invalid_path", "files.../evil"),
    ({"steps": ["x"], "files": {"/abs": "x"}}, "invalid_path", "files./abs"),
    ({"steps": ["x"], "files": {"ok.txt": 1}}, "invalid_spec", "files.ok.txt"),
    ({"steps": ["x"], "env": {"1BAD": "x"}}, "invalid_env", "env.1BAD"),
    ({"steps": ["x"], "env": {"A": 1}}, "invalid_env", "env.A"),
    ({"steps": ["x"], "env": []}, "invalid_spec", "env"),
    ({"steps": ["x"], "timeout": -1}, "invalid_timeout", "timeout"),
    ({"steps": ["x"], "timeout": "soon"}, "invalid_timeout", "timeout"),
    ({"steps": [{"run": "x", "timeout": 0}]}, "invalid_timeout", "steps[0].timeout"),
    ({"steps": ["x"], "artifacts": {"paths": "dist"}}, "invalid_spec", "artifacts.paths"),
    ({"steps": ["x"], "artifacts": {"paths": ["../x"]}}, "invalid_path", "artifacts.paths"),
    ({"steps": ["x"], "preview": {"command": ""}}, "invalid_spec", "preview.command"),
    ({"steps": ["x"], "preview": {"command": "x", "port": 70000}}, "invalid_spec", "preview.port"),
    ({"steps": ["x"], "preview": {"command": "x", "path": "nope"}}, "invalid_spec", "preview.path"),
    ({"steps": ["x"], "provider": "e2b"}, "provider_unavailable", "provider"),
]


@pytest.mark.parametrize(("spec", "code", "field"), BAD_SPECS)
async def test_bad_spec_is_400_with_code_and_field(
    api: Api, spec: Any, code: str, field: str | None
) -> None:
    status, body, _ = await api.call("POST", "builds", spec)
    assert status == 400, body
    assert body["error"]["code"] == code
    assert body["error"].get("field") == field
    assert body["error"]["message"]
    assert "Traceback" not in json.dumps(body)


async def test_invalid_json_body(api: Api) -> None:
    status, body, _ = await api.call("POST", "builds", "{not json")
    assert status == 400 and body["error"]["code"] == "invalid_json"


async def test_workspace_symlink_escape_is_refused(api: Api, jp_root_dir: Any) -> None:
    (jp_root_dir / "escape").symlink_to("/etc")
    status, body, _ = await api.call("POST", "builds", {"steps": ["x"], "workspace": "escape"})
    assert status == 400 and body["error"]["field"] == "workspace"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("builds", {"limit": "0"}),
        ("builds", {"limit": "x"}),
        ("builds", {"before": "-1"}),
        ("builds", {"status": "weird"}),
    ],
)
async def test_bad_query_is_400(api: Api, path: str, params: dict[str, str]) -> None:
    status, body, _ = await api.call("GET", path, params=params)
    assert status == 400 and body["error"]["code"] == "invalid_query"


async def test_bad_log_query_is_400(api: Api) -> None:
    build = await api.create({"steps": ["echo x"]})
    for params in ({"after": "-1"}, {"limit": "10001"}, {"after": "abc"}):
        status, body, _ = await api.call("GET", f"builds/{build['id']}/logs", params=params)
        assert status == 400 and body["error"]["field"] in params


async def test_unknown_build_and_endpoint_are_json_404(api: Api) -> None:
    for method, path in [
        ("GET", "builds/nope"),
        ("GET", "builds/nope/logs"),
        ("POST", "builds/nope/cancel"),
        ("DELETE", "builds/nope"),
        ("GET", "nothing/here"),
    ]:
        status, body, _ = await api.call(method, path)
        assert status == 404, (method, path)
        assert body["error"]["code"] == "not_found"


async def test_unauthenticated_http_and_websocket_are_refused(api: Api) -> None:
    build = await api.create({"steps": ["echo x"]})
    no_auth = {"Authorization": ""}
    for method, path in [("GET", "builds"), ("GET", f"builds/{build['id']}"), ("POST", "builds")]:
        status, body, _ = await api.call(
            method, path, body={"steps": ["x"]} if method == "POST" else None, headers=no_auth
        )
        assert status == 403, (method, path)
        assert "error" in body
    with pytest.raises(HTTPClientError) as info:
        await api.ws_fetch(
            "agentbuild", "api", "builds", build["id"], "stream", headers={"Authorization": ""}
        )
    assert info.value.code == 403


async def test_stream_of_unknown_build_is_404(api: Api) -> None:
    with pytest.raises(HTTPClientError) as info:
        await api.ws_fetch("agentbuild", "api", "builds", "nope", "stream")
    assert info.value.code == 404


@pytest.mark.parametrize("after", ["-1", "abc", "1.5"])
async def test_stream_with_a_bad_after_is_400(api: Api, after: str) -> None:
    build = await api.create({"steps": ["echo x"]})
    with pytest.raises(HTTPClientError) as info:
        await api.ws_fetch(
            "agentbuild", "api", "builds", build["id"], "stream", params={"after": after}
        )
    assert info.value.code == 400
    assert info.value.response is not None
    error = json.loads(info.value.response.body)["error"]
    assert error["message"].startswith("after must be")


async def test_rate_limit_answers_429_with_retry_after(
    api: Api, agentbuild_config: dict[str, Any]
) -> None:
    service = api.app.web_app.settings["agentbuild"].service
    service.builds_per_window, service.rate_window = 2, 120.0
    for _ in range(2):
        await api.create({"steps": ["true"]})
    status, body, headers = await api.call("POST", "builds", {"steps": ["true"]})
    assert status == 429 and body["error"]["code"] == "quota_exceeded"
    assert 1 <= int(headers["Retry-After"]) <= 120
    # Deleting builds does not give the budget back.
    _, page, _ = await api.call("GET", "builds")
    for b in page["builds"]:
        await api.finish(b["id"])
        await api.call("DELETE", f"builds/{b['id']}")
    status, _, _ = await api.call("POST", "builds", {"steps": ["true"]})
    assert status == 429


async def test_unsupported_verbs_are_json_405(api: Api) -> None:
    build = await api.create({"steps": ["true"]})
    for method, path in [
        ("POST", f"builds/{build['id']}"),
        ("GET", f"builds/{build['id']}/cancel"),
        ("DELETE", "builds"),
    ]:
        status, body, _ = await api.call(method, path)
        assert status == 405, (method, path)
        assert body["error"]["code"] == "method_not_allowed"

"""Bounded in bytes: the request body, the stored spec, and what a list returns."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Api

REQUEST_LIMIT = 300_000
SPEC_LIMIT = 200_000


@pytest.fixture
def agentbuild_config(agentbuild_config: dict[str, Any]) -> dict[str, Any]:
    return {
        **agentbuild_config,
        "max_request_bytes": REQUEST_LIMIT,
        "max_spec_bytes": SPEC_LIMIT,
    }


def _too_large(status: int, body: Any, code: str) -> None:
    assert status == 413, (status, body)
    assert body["error"]["code"] == code, body


async def test_a_body_over_the_limit_is_413_before_it_is_read(api: Api) -> None:
    big = json.dumps({"steps": ["true"], "env": {"A": "x" * REQUEST_LIMIT}})
    status, body, _ = await api.call("POST", "builds", big)
    _too_large(status, body, "request_too_large")
    # a body that stays under the limit is parsed as usual
    status, body, _ = await api.call("POST", "builds", {"steps": ["true"], "env": {"A": "x"}})
    assert status == 201, body


async def test_a_chunked_body_over_the_limit_is_413(
    api: Api, http_server_client: Any, jp_base_url: str, jp_serverapp: Any
) -> None:
    async def produce(write: Any) -> None:
        await write(b'{"steps": ["true"], "env": {"A": "')
        for _ in range(REQUEST_LIMIT // 10_000 + 5):
            await write(b"x" * 10_000)
        await write(b'"}}')

    response = await http_server_client.fetch(
        f"{jp_base_url}agentbuild/api/builds",
        method="POST",
        headers={"Authorization": f"token {jp_serverapp.identity_provider.token}"},
        body_producer=produce,
        raise_error=False,
    )
    _too_large(response.code, json.loads(response.body), "request_too_large")


async def test_a_spec_over_the_stored_limit_is_413(api: Api) -> None:
    env = {f"V{i}": "x" * 60_000 for i in range(4)}  # each variable fine, the whole too large
    status, body, _ = await api.call("POST", "builds", {"steps": ["true"], "env": env})
    _too_large(status, body, "spec_too_large")
    status, body, _ = await api.call(
        "POST", "builds", {"steps": ["true"], "env": {"A": "x" * 200_000}}
    )
    assert status == 413 and body["error"]["field"] == "env.A", body  # over Linux's 128 KiB


async def test_the_list_returns_summaries_and_get_the_whole_spec(api: Api) -> None:
    run = "echo " + "long command " * 100
    spec = {
        "steps": [{"name": "first", "run": run}, "true"],
        "files": {"data.txt": "d" * 150_000},
        "env": {"PUBLIC": "p" * 10_000, "KEY": {"value": "s3cret", "secret": True}},
        "preview": {"command": "python -m http.server $PORT", "path": "/x"},
        "artifacts": {"paths": [f"out{i}/*" for i in range(50)]},
    }
    created = await api.create(spec)
    await api.finish(created["id"])
    whole = await api.get(created["id"])
    assert whole["spec_complete"] is True
    assert whole["spec"]["files"] == spec["files"]
    assert whole["spec"]["env"]["PUBLIC"] == spec["env"]["PUBLIC"]  # type: ignore[index]

    code, page, headers = await api.call("GET", "builds")
    assert code == 200
    assert len(json.dumps(page)) < 10_000  # not the 160 kB of the spec
    (item,) = page["builds"]
    assert item["id"] == created["id"] and item["spec_complete"] is False
    summary = item["spec"]
    assert "files" not in summary and "env" not in summary
    assert summary["steps"][0]["name"] == "first"
    assert run.startswith(summary["steps"][0]["run"]) and len(summary["steps"][0]["run"]) == 200
    assert summary["steps"][1] == {"run": "true"}
    assert summary["preview"] == {**spec["preview"], "ready_timeout": 60.0}  # type: ignore[dict-item]
    assert summary["artifacts"]["paths"] == [f"out{i}/*" for i in range(20)]
    # every other field of the Build is the same as GET's
    assert {k: v for k, v in item.items() if k not in ("spec", "spec_complete")} == {
        k: v for k, v in whole.items() if k not in ("spec", "spec_complete")
    }

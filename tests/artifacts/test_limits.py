"""ArtifactCollector.max_files and max_bytes stop collection, and the event says so."""

from __future__ import annotations

from typing import Any

import pytest
from traitlets.config import Config

from tests.artifacts.conftest import build_and_collect, events
from tests.conftest import Api, server_config


@pytest.fixture
def jp_server_config(agentbuild_config: dict[str, Any]) -> Config:
    config = server_config(agentbuild_config)
    config.ArtifactCollector.max_files = 3
    config.ArtifactCollector.max_bytes = 1000
    return config


async def test_file_limit_truncates_in_walk_order(api: Api) -> None:
    steps = ["mkdir out && for f in a b c d e; do echo -n 1 > out/$f; done"]
    build, entries = await build_and_collect(api, steps, {"paths": ["out"]})
    assert build["status"] == "succeeded"
    ready = events(entries, "artifacts_ready")
    assert len(ready) == 1
    assert ready[0] == {
        "count": 3,
        "total_size": 3,
        "truncated": True,
        "links": 0,
        "skipped": 0,
        "reason": "max_artifact_files",
        "limit": 3,
        "not_collected": 2,
        "message": "artifact collection stopped at the max_artifact_files limit (3): "
        "2 selected path(s) were not collected",
    }
    assert build["artifacts"] == ready[0]
    code, manifest, _ = await api.call("GET", f"builds/{build['id']}/artifacts")
    assert [a["path"] for a in manifest["artifacts"]] == ["out/a", "out/b", "out/c"]
    assert manifest["truncated"] is True


async def test_byte_limit_stops_before_the_file_that_would_pass_it(api: Api) -> None:
    steps = [
        "mkdir out && head -c 400 /dev/zero > out/a && head -c 400 /dev/zero > out/b"
        " && head -c 400 /dev/zero > out/c && echo -n x > out/d"
    ]
    build, entries = await build_and_collect(api, steps, {"paths": ["out"]})
    ready = events(entries, "artifacts_ready")[0]
    assert ready["truncated"] is True and ready["reason"] == "max_artifact_bytes"
    assert ready["limit"] == 1000 and ready["count"] == 2 and ready["total_size"] == 800
    assert ready["not_collected"] == 2  # collection stops: "d" would fit but comes after
    code, manifest, _ = await api.call("GET", f"builds/{build['id']}/artifacts")
    assert [a["path"] for a in manifest["artifacts"]] == ["out/a", "out/b"]
    assert manifest["total_size"] == 800


async def test_under_the_limits_nothing_is_truncated(api: Api) -> None:
    build, entries = await build_and_collect(
        api, ["mkdir out && echo hi > out/a"], {"paths": ["out"]}
    )
    ready = events(entries, "artifacts_ready")[0]
    assert ready["truncated"] is False and "reason" not in ready

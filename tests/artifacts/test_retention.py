"""Retention: the sweep removes expired artifacts, an owner's oldest beyond the cap, and
orphaned blobs; nothing else (not other owners', not recent ones, not build records)."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from traitlets.config import Config

from jupyter_agentbuild.entries import utcnow
from jupyter_agentbuild.store.schema import artifact_sets
from tests.artifacts.conftest import Http, artifacts_of
from tests.conftest import Api, as_user, multi_user_config

API = "agentbuild/api/builds"


@pytest.fixture
def jp_server_config(agentbuild_config: dict[str, Any]) -> Config:
    config = multi_user_config(agentbuild_config)
    config.ArtifactService.retention_days = 7
    config.ArtifactService.max_bytes_per_owner = 1000
    config.ArtifactService.sweep_interval = 3600
    return config


async def _build(api: Api, user: str, size: int) -> str:
    code, build, _ = await api.call(
        "POST",
        "builds",
        {"steps": [f"head -c {size} /dev/zero > blob"], "artifacts": {"paths": ["blob"]}},
        headers=as_user(user),
    )
    assert code == 201, build
    ws = await api.ws_fetch(
        "agentbuild", "api", "builds", build["id"], "stream", headers=as_user(user)
    )
    while await ws.read_message() is not None:
        pass
    return str(build["id"])


async def _age(api: Api, build_id: str, days: float) -> None:
    engine = api.app.web_app.settings["agentbuild"].store.engine
    async with engine.begin() as conn:
        await conn.execute(
            update(artifact_sets)
            .where(artifact_sets.c.build_id == build_id)
            .values(created_at=utcnow() - timedelta(days=days))
        )


async def _manifest(api: Api, user: str, build_id: str) -> dict[str, Any]:
    code, body, _ = await api.call("GET", f"builds/{build_id}/artifacts", headers=as_user(user))
    assert code == 200, body
    return body  # type: ignore[no-any-return]


async def test_sweep_removes_what_it_should_and_nothing_else(api: Api, http: Http) -> None:
    service = artifacts_of(api)
    root = Path(service.root)
    a_old = await _build(api, "alice", 300)
    a2, a3, a4 = [await _build(api, "alice", 400) for _ in range(3)]
    b_old = await _build(api, "bob", 100)
    b_new = await _build(api, "bob", 900)
    # Ages: alice's a_old and bob's b_old are past retention; a2 < a3 < a4 are recent.
    await _age(api, a_old, 10)
    await _age(api, b_old, 8)
    for build_id, days in ((a2, 3), (a3, 2), (a4, 1), (b_new, 1)):
        await _age(api, build_id, days)
    # Blobs nobody needs (a deleted build's leftovers) go too (tests/store: a running
    # build's stay).
    (root / "feedfacefeedface").mkdir()
    (root / "feedfacefeedface" / "0000000").write_bytes(b"x")

    report = await service.sweep()

    assert report.expired == [a_old, b_old]  # oldest first
    # alice keeps 1200 bytes after expiry, the cap is 1000: the oldest (a2) goes.
    assert report.owner_quota == [a2]
    assert report.orphans == ["feedfacefeedface"]
    assert sorted(await asyncio.to_thread(os.listdir, root)) == sorted([a3, a4, b_new])
    removed = [("alice", a_old, "expired"), ("bob", b_old, "expired"), ("alice", a2, "owner_quota")]
    for user, build_id, reason in removed:
        manifest = await _manifest(api, user, build_id)
        assert manifest["artifacts"] == [] and manifest["removed"] == reason
        code, build, _ = await api.call("GET", f"builds/{build_id}", headers=as_user(user))
        assert code == 200 and build["status"] == "succeeded"  # the build record stays
        assert build["artifacts"]["count"] == 0 and build["artifacts"]["removed"] == reason
        code, logs, _ = await api.call("GET", f"builds/{build_id}/logs", headers=as_user(user))
        assert code == 200 and logs["entries"]  # and its logs
        gone = await http.get(f"{API}/{build_id}/artifacts/blob", as_user(user))
        assert gone.code == 404
    for user, build_id, size in (("alice", a3, 400), ("alice", a4, 400), ("bob", b_new, 900)):
        manifest = await _manifest(api, user, build_id)
        assert [a["size"] for a in manifest["artifacts"]] == [size]
        kept = await http.get(f"{API}/{build_id}/artifacts/blob", as_user(user))
        assert kept.code == 200 and kept.size == size

    again = await service.sweep()  # idempotent: nothing left to remove
    assert again.expired == again.owner_quota == again.orphans == []


async def test_the_periodic_sweep_runs_on_its_own(api: Api) -> None:
    service = artifacts_of(api)
    build_id = await _build(api, "carol", 10)
    await _age(api, build_id, 30)
    await service.stop()
    service.sweep_interval = 0.01
    service.start()
    await service.wait_for_sweeps(service.sweeps + 2)  # at least one whole sweep after aging
    manifest = await _manifest(api, "carol", build_id)
    assert manifest["removed"] == "expired" and manifest["artifacts"] == []
    code, body, _ = await api.call("GET", f"builds/{build_id}", headers=as_user("carol"))
    assert json.dumps(body["artifacts"]).count("expired") == 1

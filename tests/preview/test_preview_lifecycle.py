"""A preview's life: starting -> ready -> stopped | failed, and what frees its port."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import statuses
from tests.preview.conftest import BACKEND, PREVIEW_COMMAND, WAIT, Previews, port_open


def preview_pids(build_id: str) -> list[int]:
    """Live processes of the build's sandbox (they carry its marker)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("AGENTBUILD_BUILD_ID") == build_id and proc.status() != (
                psutil.STATUS_ZOMBIE
            ):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


async def wait_for_event(previews: Previews, build_id: str, kind: str) -> dict[str, Any]:
    """Read the build's live stream until an event of ``kind`` arrives."""
    ws = await previews.api.ws_fetch("agentbuild", "api", "builds", build_id, "stream")
    try:
        while True:
            message = await asyncio.wait_for(ws.read_message(), WAIT)
            assert message is not None, f"the stream ended before {kind}"
            for entry in json.loads(message):
                if entry.get("type") == kind:
                    return entry  # type: ignore[no-any-return]
    finally:
        ws.close()


async def test_stop_endpoint_stops_it_and_frees_the_port(
    previews: Previews, tmp_path: Path
) -> None:
    build = await previews.start()
    bid = build["id"]
    _, port = previews.target(bid)
    assert preview_pids(bid) and port_open(port)
    code, stopped, _ = await previews.api.call("POST", f"builds/{bid}/preview/stop")
    assert code == 200
    assert stopped["status"] == "succeeded"  # the build's own result does not change
    preview = stopped["preview"]
    assert preview["state"] == "stopped" and preview["reason"] == "stopped by request"
    assert preview["stopped_at"] and preview["url"] is None  # the URL died with it
    assert preview["path_url"] == previews.path(bid)
    assert "exit_code" not in preview
    assert preview_pids(bid) == [] and not port_open(port)
    assert not (tmp_path / "sandboxes" / bid).exists()
    again, body, _ = await previews.api.call("POST", f"builds/{bid}/preview/stop")
    assert again == 409 and body["error"]["code"] == "no_preview"
    gone = await previews.fetch(bid, "/tiny")
    assert gone.code == 404
    assert "no preview is running" in json.loads(gone.body)["error"]["message"]
    code, body, _ = await previews.api.call("POST", "builds/0000000000000000/preview/stop")
    assert code == 404


async def test_the_terminal_row_already_records_the_kept_sandbox(previews: Previews) -> None:
    """A server killed right after its build ended must leave the preview's processes
    recorded: the write that makes the row terminal carries them (not a later one)."""
    store = previews.manager.store
    real_end = store.end_with_entry
    terminal_writes: list[dict[str, Any]] = []

    async def observed(build_id: str, entry: Any, **fields: Any) -> Any:
        if fields.get("to_status") == "succeeded":  # the terminal row, with its last entry
            terminal_writes.append(fields)
        return await real_end(build_id, entry, **fields)

    store.end_with_entry = observed
    try:
        build = await previews.start()
    finally:
        store.end_with_entry = real_end
    (written,) = terminal_writes
    pgids = [pgid for pgid, _ in written["sandbox_state"]["pgids"]]
    running = {os.getpgid(pid) for pid in preview_pids(build["id"])}
    assert running and running <= set(pgids), (running, pgids)


async def test_idle_preview_is_stopped(previews: Previews) -> None:
    manager = previews.manager
    manager.idle_timeout = 1.0
    build = await previews.start()
    bid = build["id"]
    _, port = previews.target(bid)
    preview = manager.get(bid)
    for _ in range(3):
        assert (await previews.fetch(bid, "/tiny")).code == 200
    last = time.monotonic()
    await asyncio.wait_for(preview.closed.wait(), WAIT)
    final = preview.record
    assert time.monotonic() - last >= 0.9
    assert final["state"] == "stopped" and final["reason"] == "no traffic for 1s"
    assert not port_open(port) and preview_pids(bid) == []
    assert (await previews.api.get(bid))["preview"]["state"] == "stopped"


async def test_process_exit_is_failed_with_its_exit_code(previews: Previews) -> None:
    build = await previews.start()
    bid = build["id"]
    _, port = previews.target(bid)
    preview = previews.manager.get(bid)
    assert (await previews.fetch(bid, "/exit?code=3")).body == b"exiting"
    await asyncio.wait_for(preview.closed.wait(), WAIT)
    final = preview.record
    assert final["state"] == "failed" and final["exit_code"] == 3
    record = (await previews.api.get(bid))["preview"]
    assert record["state"] == "failed" and record["exit_code"] == 3
    assert record["error"] == "the preview process exited with status 3"
    assert not port_open(port) and preview_pids(bid) == []
    assert (await previews.fetch(bid, "/tiny")).code == 404


async def test_delete_stops_the_preview(previews: Previews, tmp_path: Path) -> None:
    build = await previews.start()
    bid = build["id"]
    _, port = previews.target(bid)
    code, _, _ = await previews.api.call("DELETE", f"builds/{bid}")
    assert code == 204
    assert previews.manager.get(bid) is None
    assert not port_open(port) and preview_pids(bid) == []
    assert not (tmp_path / "sandboxes" / bid).exists()
    assert (await previews.fetch(bid, "/tiny")).code == 404


async def test_server_shutdown_stops_previews(previews: Previews) -> None:
    first = await previews.start()
    second = await previews.start(preview={"port": None})
    ports = [previews.target(b["id"])[1] for b in (first, second)]
    await previews.manager.shutdown()
    for build, port in zip((first, second), ports, strict=True):
        assert not port_open(port) and preview_pids(build["id"]) == []
        record = (await previews.api.get(build["id"]))["preview"]
        assert record["state"] == "stopped"
        assert record["reason"] == "the Jupyter server stopped"


async def test_a_preview_that_never_gets_ready_fails_and_the_build_still_succeeds(
    previews: Previews,
) -> None:
    build = await previews.start(preview={"command": "echo starting; exit 3"}, ready=False)
    assert build["status"] == "succeeded"
    assert build["preview"]["state"] == "failed" and build["preview"]["exit_code"] == 3
    entries = await previews.api.all_logs(build["id"])
    events = [e.get("type") for e in entries if e["kind"] == "event"]
    assert events[-3:] == ["preview_starting", "preview_stopped", "status"]
    stopped = next(e for e in entries if e.get("type") == "preview_stopped")
    assert stopped["data"]["state"] == "failed" and "status 3" in stopped["data"]["error"]
    assert [e["text"] for e in entries if e["kind"] == "log" and e["step"] == 1] == ["starting"]
    assert preview_pids(build["id"]) == []

    unhealthy = await previews.start(
        preview={"path": "/status/500", "ready_timeout": 1}, ready=False
    )
    record = unhealthy["preview"]
    assert record["state"] == "failed" and "exit_code" not in record
    assert "answer GET /status/500 below 500 (HTTP 500)" in record["error"]
    assert preview_pids(unhealthy["id"]) == []


async def test_no_preview_after_failed_steps(previews: Previews) -> None:
    code, build, _ = await previews.api.call(
        "POST",
        "builds",
        {
            "steps": ["exit 1"],
            "files": {"app.py": BACKEND},
            "preview": {"command": PREVIEW_COMMAND},
        },
    )
    assert code == 201
    final = await previews.api.finish(build["id"])
    assert final["status"] == "failed" and final["preview"] is None


async def test_cancel_or_stop_while_starting(previews: Previews) -> None:
    never_ready = {"command": "echo waiting; exec sleep 1000", "ready_timeout": 600}
    code, build, _ = await previews.api.call(
        "POST", "builds", {"steps": ["true"], "preview": never_ready}
    )
    assert code == 201
    await wait_for_event(previews, build["id"], "preview_starting")
    code, cancelled, _ = await previews.api.call("POST", f"builds/{build['id']}/cancel")
    assert code == 202 and cancelled["status"] == "cancelled"
    assert cancelled["preview"]["state"] == "stopped"
    assert preview_pids(build["id"]) == []

    code, build, _ = await previews.api.call(
        "POST", "builds", {"steps": ["true"], "preview": never_ready}
    )
    await wait_for_event(previews, build["id"], "preview_starting")
    code, stopped, _ = await previews.api.call("POST", f"builds/{build['id']}/preview/stop")
    assert code == 200 and stopped["preview"]["reason"] == "stopped by request"
    final = await previews.api.finish(build["id"])
    assert final["status"] == "succeeded" and final["preview"]["state"] == "stopped"
    entries = await previews.api.all_logs(build["id"])
    assert statuses(entries)[-1] == "succeeded" and entries[-1]["type"] == "status"
    assert preview_pids(build["id"]) == []


async def test_fixed_port_and_its_conflict(previews: Previews) -> None:
    first = await previews.start()
    _, port = previews.target(first["id"])
    taken = await previews.start(preview={"port": port}, ready=False)
    assert taken["preview"]["state"] == "failed" and "in use" in taken["preview"]["error"]
    await previews.api.call("POST", f"builds/{first['id']}/preview/stop")
    fixed = await previews.start(preview={"port": port})
    assert fixed["preview"]["state"] == "ready" and previews.target(fixed["id"])[1] == port
    assert (await previews.fetch(fixed["id"], "/tiny")).body == b"ok"


async def test_without_a_live_preview_the_artifacts_are_served_as_a_static_site(
    previews: Previews,
) -> None:
    build = await previews.start(
        steps=["mkdir -p site && echo '<h1>static</h1>' > site/index.html"],
        artifacts={"paths": ["site"]},
    )
    bid = build["id"]
    live = await previews.fetch(bid, "/")
    assert live.body == b"<h1>hello preview</h1>"  # the live preview wins while it runs
    code, _, _ = await previews.api.call("POST", f"builds/{bid}/preview/stop")
    assert code == 200
    static = await previews.fetch(bid, "/")
    assert static.code == 200 and static.body == b"<h1>static</h1>\n"
    assert "sandbox allow-scripts" in static.headers["Content-Security-Policy"]
    assert static.headers["X-Content-Type-Options"] == "nosniff"
    missing = await previews.fetch(bid, "/nope.html")
    assert missing.code == 404
    assert "no preview is running" in json.loads(missing.body)["error"]["message"]
    bare = await previews.fetch(bid, "")
    assert bare.code == 302 and bare.headers["Location"].endswith(f"{bid}/")

"""Previews run by another server sharing the database: its heartbeat, a stop asked of
it, and what happens when it is dead and on another host."""

from __future__ import annotations

import asyncio
import signal
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

from jupyter_agentbuild.entries import utcnow
from tests.preview.conftest import Previews, port_open
from tests.preview.test_preview_lifecycle import preview_pids

ELSEWHERE_STATE = {"host": "elsewhere.invalid", "dir": "/nonexistent/b", "pgids": [[4321, 1.0]]}


async def remote_preview(previews: Previews, *, beat_age: float) -> dict[str, Any]:
    """A finished build recorded as if a server on another host ran it and its preview
    were ready there, last checked in ``beat_age`` seconds ago."""
    build = await previews.api.create({"steps": ["true"]})
    build = await previews.api.finish(build["id"])
    then = utcnow() - timedelta(seconds=beat_age)
    await previews.manager.store.update_build(
        build["id"],
        preview={"state": "ready", "step": 1, "url": "/agentbuild/preview/x/"},
        runner_id="a-server-elsewhere",
        runner_host="elsewhere.invalid",
        runner_pid=4321,
        heartbeat_at=then,
        finished_at=then,
        sandbox_id="local-elsewhere",
        sandbox_state=ELSEWHERE_STATE,
    )
    return build


async def test_a_live_remote_server_is_asked_and_a_dead_one_is_done_without(
    previews: Previews,
) -> None:
    store = previews.manager.store
    alive = await remote_preview(previews, beat_age=1)
    code, body, _ = await previews.api.call("POST", f"builds/{alive['id']}/preview/stop")
    assert code == 202, body
    row = await store.get_build(alive["id"])
    assert row is not None and row.preview_stop_requested
    assert row.preview is not None and row.preview["state"] == "ready"

    stale_after = previews.manager.stale_after
    dead = await remote_preview(previews, beat_age=stale_after + 60)
    code, body, _ = await previews.api.call("POST", f"builds/{dead['id']}/preview/stop")
    assert code == 200, body
    assert body["preview"]["state"] == "stopped"
    assert body["preview"]["reason"] == (
        "stopped by request (the server running the preview stopped)"
    )
    row = await store.get_build(dead["id"])
    assert row is not None and not row.preview_stop_requested
    # its processes are on the other host: the record stays for a server there
    assert row.sandbox_state == ELSEWHERE_STATE
    again, body, _ = await previews.api.call("POST", f"builds/{dead['id']}/preview/stop")
    assert again == 409 and body["error"]["code"] == "no_preview"


async def test_live_previews_check_in_and_one_declared_dead_elsewhere_is_stopped(
    previews: Previews,
) -> None:
    store, manager = previews.manager.store, previews.manager
    build = await previews.start()
    bid = build["id"]
    _, port = previews.target(bid)
    long_ago = utcnow() - timedelta(hours=1)
    await store.update_build(bid, heartbeat_at=long_ago)
    await manager.apply_requests()
    row = await store.get_build(bid)
    assert row is not None and row.heartbeat_at is not None and row.heartbeat_at > long_ago
    assert manager.live(bid) is not None, "a check-in alone stops nothing"

    # another server took this one for dead (it could not check in) and recorded the end
    ended = {"state": "stopped", "step": 1, "reason": "stopped by request (elsewhere)"}
    await store.update_build(bid, preview=ended)
    await manager.apply_requests()
    assert manager.live(bid) is None
    assert preview_pids(bid) == [] and not port_open(port)
    row = await store.get_build(bid)
    assert row is not None and row.preview == ended and row.sandbox_state is None


async def test_start_up_reaps_a_sandbox_recorded_for_this_host_whatever_its_preview_state(
    previews: Previews, tmp_path: Path
) -> None:
    """A server elsewhere stopped this host's preview in the record only (it could not
    reach the processes): the next server starting here kills them."""
    import psutil

    store, manager = previews.manager.store, previews.manager
    build = await previews.api.finish((await previews.api.create({"steps": ["true"]}))["id"])
    orphan = await asyncio.create_subprocess_exec("sleep", "1000", start_new_session=True)
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()  # a pid that no longer runs: the dead server's
    try:
        state = {
            "host": socket.gethostname(),
            "dir": str(tmp_path / "not-a-sandbox"),
            "pgids": [[orphan.pid, psutil.Process(orphan.pid).create_time()]],
        }
        stopped = {"state": "stopped", "step": 1, "reason": "stopped by request (elsewhere)"}
        await store.update_build(
            build["id"],
            preview=stopped,
            runner_host=socket.gethostname(),
            runner_pid=gone.pid,
            sandbox_id="local-orphan",
            sandbox_state=state,
        )
        await manager.start()  # what a server starting on this host does first
        assert await asyncio.wait_for(orphan.wait(), 10) == -signal.SIGKILL
        row = await store.get_build(build["id"])
        assert row is not None and row.sandbox_state is None
        assert row.preview == stopped, "an end already recorded is not rewritten"
    finally:
        if orphan.returncode is None:
            orphan.kill()
            await orphan.wait()

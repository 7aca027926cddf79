"""``POST api/builds/{id}/preview/restart``: a fresh preview process at the same URLs.

Real builds, real preview processes: the restart replaces the process (new pids, the old
ones gone), serves what was edited in the sandbox meanwhile, keeps both URLs, and
answers 409 with a code saying why when there is nothing to restart.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from tests.preview.conftest import BACKEND, Previews, port_open
from tests.preview.test_preview_lifecycle import preview_pids
from tests.preview.test_proxy_ws import connect


def sandbox_app(tmp_path: Path, build_id: str) -> Path:
    """The preview's ``app.py`` in the build's (local) sandbox."""
    found = sorted((tmp_path / "sandboxes" / build_id).rglob("app.py"))
    assert found, f"no app.py under the sandbox of {build_id}"
    return found[0]


async def test_restart_while_ready_serves_a_new_process_at_the_same_urls(
    previews: Previews, tmp_path: Path
) -> None:
    build = await previews.start()
    bid = build["id"]
    old_pids = preview_pids(bid)
    assert old_pids
    ws = await connect(previews, bid)
    app = sandbox_app(tmp_path, bid)
    app.write_text(BACKEND.replace('b"ok")', 'b"ok, edited")'))

    code, restarted, _ = await previews.api.call("POST", f"builds/{bid}/preview/restart")

    assert code == 200, restarted
    assert restarted["status"] == "succeeded"
    preview = restarted["preview"]
    assert preview["state"] == "ready" and preview["restarted_at"], preview
    # same URLs: the own origin's label and the path proxy survive a restart
    assert preview["url"] == build["preview"]["url"]
    assert preview["path_url"] == build["preview"]["path_url"]
    new_pids = preview_pids(bid)
    assert new_pids and not set(new_pids) & set(old_pids)
    assert not [p for p in old_pids if psutil.pid_exists(p) and p in preview_pids(bid)]
    assert await ws.read_message() is None  # sockets of the old process were closed
    tiny = await previews.fetch(bid, "/tiny")
    assert tiny.code == 200 and tiny.body == b"ok, edited"
    own = await previews.own(previews.own_host(restarted), "/tiny")
    assert own.code == 200 and own.body == b"ok, edited"
    # the recorded sandbox state names the new process group (what a successor reaps)
    row = await previews.manager.store.get_build(bid)
    recorded = {pgid for pgid, _ in row.sandbox_state["pgids"]}
    assert {os.getpgid(p) for p in new_pids} <= recorded

    code, stopped, _ = await previews.api.call("POST", f"builds/{bid}/preview/stop")
    assert code == 200 and stopped["preview"]["state"] == "stopped"
    assert preview_pids(bid) == []


async def test_a_restart_that_fails_records_why(previews: Previews, tmp_path: Path) -> None:
    build = await previews.start()
    bid = build["id"]
    _, old_port = previews.target(bid)
    sandbox_app(tmp_path, bid).write_text("raise SystemExit(3)\n")

    code, restarted, _ = await previews.api.call("POST", f"builds/{bid}/preview/restart")

    assert code == 200, restarted
    preview = restarted["preview"]
    assert preview["state"] == "failed" and preview["reason"] == "it did not restart"
    assert preview["exit_code"] == 3 and "status 3" in preview["error"]
    assert preview["url"] is None
    assert preview_pids(bid) == [] and not port_open(old_port)
    assert not (tmp_path / "sandboxes" / bid).exists()
    assert (await previews.fetch(bid, "/tiny")).code == 404


async def test_restart_after_stop_is_409_preview_gone(previews: Previews) -> None:
    build = await previews.start()
    bid = build["id"]
    code, _, _ = await previews.api.call("POST", f"builds/{bid}/preview/stop")
    assert code == 200

    code, body, _ = await previews.api.call("POST", f"builds/{bid}/preview/restart")

    assert code == 409 and body["error"]["code"] == "preview_gone", body
    assert "run the build again" in body["error"]["message"]
    assert "Traceback" not in str(body)
    code, after, _ = await previews.api.call("GET", f"builds/{bid}")
    assert after["preview"]["state"] == "stopped" and preview_pids(bid) == []


async def test_restart_without_a_preview_is_409_no_preview(previews: Previews) -> None:
    code, build, _ = await previews.api.call("POST", "builds", {"steps": ["true"]})
    assert code == 201
    await previews.api.finish(build["id"])

    code, body, _ = await previews.api.call("POST", f"builds/{build['id']}/preview/restart")

    assert code == 409 and body["error"]["code"] == "no_preview", body
    code, body, _ = await previews.api.call("POST", "builds/0000000000000000/preview/restart")
    assert code == 404 and body["error"]["code"]
    code, body, _ = await previews.api.call("GET", f"builds/{build['id']}/preview/restart")
    assert code == 405

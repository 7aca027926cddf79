"""The build API on a real server: lifecycle, fields, failures, cancel, timeouts, output."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.conftest import Api, read_until, statuses, texts
from tests.sandbox.helpers import marked


async def test_build_runs_and_every_field_is_populated(api: Api) -> None:
    build = await api.create(
        {
            "name": "hello",
            "steps": ["echo one; echo two >&2", {"name": "second", "run": "echo three"}],
            "env": {"GREETING": "hi"},
        }
    )
    assert build["status"] == "queued"
    assert build["owner"] and build["provider"] == "local"
    assert build["created_at"].endswith("Z")
    entries, close_code = await api.stream(build["id"])
    assert close_code == 1000
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert statuses(entries) == ["queued", "starting", "running", "succeeded"]
    assert entries[-1]["type"] == "status"  # the terminal status is the last entry
    assert texts(entries) == ["one", "two", "three"]
    by_stream = {e["text"]: (e["stream"], e["step"]) for e in entries if e["kind"] == "log"}
    assert by_stream == {"one": ("stdout", 0), "two": ("stderr", 0), "three": ("stdout", 1)}
    final = await api.get(build["id"])
    assert final["status"] == "succeeded" and final["exit_code"] == 0
    assert final["sandbox_id"] and final["started_at"] and final["finished_at"]
    assert final["started_at"] <= final["finished_at"]
    assert final["last_seq"] == entries[-1]["seq"]
    assert final["spec"]["env"] == {"GREETING": "hi"}
    assert set(final) >= {"preview", "artifacts", "error", "name", "spec"}


async def test_failing_step_stops_later_steps_with_its_exit_code(api: Api) -> None:
    build = await api.create({"steps": ["echo before", "exit 7", "echo never"]})
    entries, _ = await api.stream(build["id"])
    final = await api.get(build["id"])
    assert final["status"] == "failed" and final["exit_code"] == 7
    assert "exit code 7" in final["error"]
    assert "never" not in texts(entries)
    finished = [e["data"] for e in entries if e.get("type") == "step_finished"]
    assert [f["exit_code"] for f in finished] == [0, 7]


async def test_pipefail_semantics(api: Api) -> None:
    build = await api.create({"steps": ["false | true\necho unreachable"]})
    final = await api.finish(build["id"])
    assert final["status"] == "failed" and final["exit_code"] == 1


async def test_hostile_output_is_stored_safely(api: Api) -> None:
    script = (
        "printf 'bad \\xff\\xfe utf8\\n'; printf 'nul\\000byte\\n'; "
        "head -c 3000000 /dev/zero | tr '\\0' 'x'; echo; printf 'no newline at end'"
    )
    build = await api.create({"steps": [script]})
    entries, _ = await api.stream(build["id"])
    final = await api.get(build["id"])
    assert final["status"] == "succeeded"
    logs = [e for e in entries if e["kind"] == "log"]
    assert logs[0]["text"] == "bad \ufffd\ufffd utf8"
    assert logs[1]["text"] == "nul\x00byte"
    assert logs[-1]["text"] == "no newline at end"
    pieces = logs[2:-1]
    assert "".join(p["text"] for p in pieces) == "x" * 3_000_000
    assert all(p.get("continued") for p in pieces[:-1]) and not pieces[-1].get("continued")
    stored = await api.all_logs(build["id"])
    assert stored == entries


async def test_stream_resumes_from_any_seq_and_rest_paging_agrees(api: Api) -> None:
    build = await api.create({"steps": ["seq 1 200000"]})
    entries, close_code = await api.stream(build["id"])
    assert close_code == 1000
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert texts(entries) == [str(i) for i in range(1, 200_001)]
    assert entries[-1]["data"]["status"] == "succeeded"
    for after in (0, 1, 3, 999, 1000, 1001, 150_000, len(entries) - 1, len(entries)):
        rest, code = await api.stream(build["id"], after=after)
        assert code == 1000
        assert rest == entries[after:], after
    assert await api.all_logs(build["id"]) == entries
    code, page, _ = await api.call(
        "GET", f"builds/{build['id']}/logs", params={"after": 5, "limit": 3}
    )
    assert [e["seq"] for e in page["entries"]] == [6, 7, 8]
    assert page["last_seq"] == len(entries) and page["done"] is False
    code, page, _ = await api.call(
        "GET", f"builds/{build['id']}/logs", params={"after": len(entries) - 2}
    )
    assert page["done"] is True and len(page["entries"]) == 2


def work_dir(agentbuild_config: dict[str, Any], build_id: str) -> Path:
    """The build's working directory on this host (a local sandbox's ``work/``)."""
    return Path(agentbuild_config["workspace_root"]) / build_id / "work"


async def test_live_stream_follows_a_running_build(
    api: Api, agentbuild_config: dict[str, Any]
) -> None:
    # The build waits for a file the test creates after the stream has seen the first line.
    build = await api.create(
        {"steps": ["echo started; while [ ! -e go ]; do sleep 0.05; done; echo done"]}
    )
    ws = await api.ws_fetch("agentbuild", "api", "builds", build["id"], "stream")
    seen = await read_until(ws, lambda seen: "started" in texts(seen))
    running = await api.get(build["id"])
    assert running["status"] == "running" and running["sandbox_id"] and running["started_at"]
    sandbox = api.app.web_app.settings["agentbuild"].runner.sandbox_of(build["id"])
    (sandbox.work / "go").write_text("")
    while True:
        msg = await ws.read_message()
        if msg is None:
            break
        seen.extend(json.loads(msg))
    assert ws.close_code == 1000
    assert texts(seen) == ["started", "done"]
    assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))


async def test_cancel_leaves_no_process(api: Api) -> None:
    build = await api.create(
        {"steps": ["sleep 1000 & echo $$ > pid; echo ready; sleep 1000", "echo never"]}
    )
    ws = await api.ws_fetch("agentbuild", "api", "builds", build["id"], "stream")
    seen = await read_until(ws, lambda seen: "ready" in texts(seen))
    assert marked(build["id"], "sleep", "1000")
    code, body, _ = await api.call("POST", f"builds/{build['id']}/cancel")
    assert code == 202
    assert body["status"] == "cancelled"
    assert body["finished_at"] and body["exit_code"] is not None
    assert marked(build["id"]) == []
    code, body, _ = await api.call("POST", f"builds/{build['id']}/cancel")
    assert code == 409 and body["error"]["code"] == "not_running"
    while (msg := await ws.read_message()) is not None:
        seen.extend(json.loads(msg))
    assert statuses(seen)[-1] == "cancelled" and "never" not in texts(seen)


async def test_step_timeout_is_timed_out(api: Api) -> None:
    build = await api.create({"steps": [{"run": "echo go; sleep 30", "timeout": 0.5}]})
    final = await api.finish(build["id"])
    assert final["status"] == "timed_out"
    assert "timeout" in final["error"]


async def test_build_timeout_is_timed_out(api: Api) -> None:
    build = await api.create({"steps": ["sleep 30"], "timeout": 0.5})
    final = await api.finish(build["id"])
    assert final["status"] == "timed_out" and final["finished_at"]


async def test_delete_removes_the_build(api: Api) -> None:
    build = await api.create({"steps": ["echo x"]})
    await api.finish(build["id"])
    code, _, _ = await api.call("DELETE", f"builds/{build['id']}")
    assert code == 204
    code, body, _ = await api.call("GET", f"builds/{build['id']}")
    assert code == 404 and body["error"]["code"] == "not_found"
    code, body, _ = await api.call("GET", f"builds/{build['id']}/logs")
    assert code == 404


async def test_list_is_newest_first_with_integer_cursor(api: Api) -> None:
    ids = [(await api.create({"steps": [f"echo {i}"]}))["id"] for i in range(5)]
    for build_id in ids:
        await api.finish(build_id)
    code, page, _ = await api.call("GET", "builds", params={"limit": 2})
    assert code == 200 and [b["id"] for b in page["builds"]] == ids[::-1][:2]
    assert isinstance(page["next"], int)
    seen = [b["id"] for b in page["builds"]]
    while page["next"] is not None:
        _, page, _ = await api.call("GET", "builds", params={"limit": 2, "before": page["next"]})
        seen += [b["id"] for b in page["builds"]]
    assert seen == ids[::-1]
    _, page, _ = await api.call("GET", "builds", params={"status": "succeeded"})
    assert len(page["builds"]) == 5
    _, page, _ = await api.call("GET", "builds", params={"status": "running"})
    assert page["builds"] == []


async def test_running_build_counts_as_server_activity(api: Api) -> None:
    times = api.app.web_app.settings.setdefault("last_activity_times", {})
    times.pop("agentbuild", None)
    build = await api.create({"steps": ["echo hi"]})
    await api.finish(build["id"])
    assert "agentbuild" in times


async def test_secret_env_is_masked_and_never_returned(api: Api) -> None:
    secret = "s3cr3t-value-123"
    build = await api.create(
        {"steps": ["echo token=$TOKEN"], "env": {"TOKEN": {"value": secret, "secret": True}}}
    )
    assert secret not in json.dumps(build)
    entries, _ = await api.stream(build["id"])
    assert texts(entries) == ["token=***"]
    assert secret not in json.dumps(await api.get(build["id"]))


async def test_concurrency_limit_queues_extra_builds(
    api: Api, agentbuild_config: dict[str, Any]
) -> None:
    runner = api.app.web_app.settings["agentbuild"].runner
    runner.max_concurrent_builds = 1
    first = await api.create({"steps": ["while [ ! -e go ]; do sleep 0.05; done"]})
    second = await api.create({"steps": ["echo second"]})
    ws = await api.ws_fetch("agentbuild", "api", "builds", first["id"], "stream")
    await read_until(ws, lambda seen: "running" in statuses(seen))
    assert (await api.get(second["id"]))["status"] == "queued"
    runner.sandbox_of(first["id"]).work.joinpath("go").write_text("")
    assert (await api.finish(second["id"]))["status"] == "succeeded"
    assert (await api.finish(first["id"]))["status"] == "succeeded"
    ws.close()
    await asyncio.sleep(0)


async def test_heartbeats_write_the_sandbox_state_only_when_it_changed(
    api: Api, agentbuild_config: dict[str, Any]
) -> None:
    from sqlalchemy import event

    agentbuild = api.app.web_app.settings["agentbuild"]
    engine = agentbuild.store.engine.sync_engine
    counts = {"beats": 0, "state_writes": 0}
    four_beats = asyncio.Event()

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().upper().startswith("UPDATE BUILDS"):
            return
        if "heartbeat_at" in statement:
            counts["beats"] += 1
            if counts["beats"] == 4:
                four_beats.set()
        if "sandbox_state" in statement:
            counts["state_writes"] += 1

    build = await api.create({"steps": ["while [ ! -e go ]; do sleep 0.05; done"]})
    ws = await api.ws_fetch("agentbuild", "api", "builds", build["id"], "stream")
    await read_until(ws, lambda seen: "running" in statuses(seen))
    event.listen(engine, "before_cursor_execute", count)
    try:
        await asyncio.wait_for(four_beats.wait(), 30)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # the step's process group appears once; four beats do not write it again
    assert counts["state_writes"] <= 1, counts
    agentbuild.runner.sandbox_of(build["id"]).work.joinpath("go").write_text("")
    assert (await api.finish(build["id"]))["status"] == "succeeded"
    ws.close()


async def test_store_outage_during_a_build_is_retried_and_loses_nothing(api: Api) -> None:
    from sqlalchemy.exc import OperationalError

    store = api.app.web_app.settings["agentbuild"].store
    real_append = store.append_chunks
    failures = {"left": 3, "seen": 0}

    async def flaky_append(build_id: str, chunks: Any) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            failures["seen"] += 1
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        await real_append(build_id, chunks)

    store.append_chunks = flaky_append
    try:
        build = await api.create({"steps": ["seq 1 5000"]})
        entries, _ = await api.stream(build["id"])
    finally:
        store.append_chunks = real_append
    assert failures["seen"] == 3
    final = await api.get(build["id"])
    assert final["status"] == "succeeded"
    stored = await api.all_logs(build["id"])
    assert stored == entries
    assert texts(stored) == [str(i) for i in range(1, 5001)]
    assert [e["seq"] for e in stored] == list(range(1, final["last_seq"] + 1))


async def test_store_down_for_good_fails_the_build_clearly(api: Api) -> None:
    from sqlalchemy.exc import OperationalError

    runner = api.app.web_app.settings["agentbuild"].runner
    runner.store_retry_timeout = 0.3
    store = api.app.web_app.settings["agentbuild"].store
    real_append = store.append_chunks

    async def down(build_id: str, chunks: Any) -> None:
        raise OperationalError("INSERT", {}, Exception("connection refused"))

    store.append_chunks = down
    try:
        build = await api.create({"steps": ["seq 1 1000000"]})
        final = await api.finish(build["id"])
    finally:
        store.append_chunks = real_append
    assert final["status"] == "failed"
    assert "database" in final["error"]
    assert final["finished_at"]


async def test_full_log_as_plain_text(api: Api) -> None:
    build = await api.create({"steps": ["seq 1 25000; printf '<b>x</b>'"]})
    await api.finish(build["id"])
    resp = await api.fetch(
        "agentbuild", "api", "builds", build["id"], "logs", params={"format": "text"}
    )
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    expected = "".join(f"{i}\n" for i in range(1, 25001)) + "<b>x</b>\n"
    assert resp.body.decode() == expected
    code, body, _ = await api.call("GET", "builds/nope/logs", params={"format": "text"})
    assert code == 404 and body["error"]["code"] == "not_found"


async def test_reconcile_ends_a_dead_remote_build_and_keeps_what_only_its_host_can_reap(
    api: Api,
) -> None:
    """A build whose server (on another host) stopped beating is marked interrupted, with
    its status entry; its local sandbox cannot be reaped from here, so it stays recorded
    for the next server on that host."""
    from datetime import timedelta

    from jupyter_agentbuild.entries import utcnow

    agentbuild = api.app.web_app.settings["agentbuild"]
    build = await api.create({"steps": ["true"]})
    await api.finish(build["id"])
    elsewhere = {"host": "elsewhere.invalid", "dir": "/nonexistent/b", "pgids": [[4321, 1.0]]}
    long_ago = utcnow() - timedelta(seconds=agentbuild.runner.stale_after + 60)
    await agentbuild.store.update_build(
        build["id"],
        status="running",
        finished_at=None,
        runner_id="a-server-elsewhere",
        runner_host="elsewhere.invalid",
        runner_pid=4321,
        heartbeat_at=long_ago,
        sandbox_id="local-elsewhere",
        sandbox_state=elsewhere,
    )
    before = (await api.get(build["id"]))["last_seq"]
    await agentbuild.runner.reconcile()
    row = await agentbuild.store.get_build(build["id"])
    assert row is not None and row.status == "interrupted" and row.finished_at
    assert row.sandbox_state == elsewhere
    assert row.last_seq == before + 1
    (last,) = [
        json.loads(e)
        for e in await agentbuild.store.read_entries(build["id"], after=before, limit=10)
    ]
    assert last["type"] == "status" and last["data"]["status"] == "interrupted"

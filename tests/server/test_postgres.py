"""The API on PostgreSQL, and two servers sharing one database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api, read_until, statuses, texts
from tests.pg import postgres_url  # noqa: F401  (fixture)
from tests.server.test_lifecycle import ServerProcess

pytestmark = pytest.mark.postgres


@pytest.fixture
def agentbuild_config(agentbuild_config: dict[str, Any], postgres_url: str) -> dict[str, Any]:  # noqa: F811
    return {**agentbuild_config, "db_url": postgres_url}


@pytest.fixture
def other_server(tmp_path: Path, postgres_url: str) -> Iterator[ServerProcess]:  # noqa: F811
    """A second `jupyter server` process on the same PostgreSQL database."""
    other = tmp_path / "other"
    other.mkdir()
    srv = ServerProcess(other, db_url=postgres_url)
    srv.start()
    yield srv
    srv.stop()


async def test_builds_and_paging_on_postgres(api: Api) -> None:
    build = await api.create({"steps": ["seq 1 20000", "exit 3"]})
    entries, code = await api.stream(build["id"])
    assert code == 1000
    final = await api.get(build["id"])
    assert final["status"] == "failed" and final["exit_code"] == 3
    assert texts(entries) == [str(i) for i in range(1, 20001)]
    assert await api.all_logs(build["id"], limit=777) == entries
    rest, _ = await api.stream(build["id"], after=12345)
    assert rest == entries[12345:]


async def test_a_build_on_another_server_streams_live_and_cancels(
    api: Api, other_server: ServerProcess
) -> None:
    # Started on the other server; this server has no memory of it: it reads the store.
    build = other_server.call("POST", "builds", {"steps": ["seq 1 3000; echo waiting; sleep 1000"]})
    ws = await api.ws_fetch("agentbuild", "api", "builds", build["id"], "stream")
    seen = await read_until(ws, lambda seen: "waiting" in texts(seen))
    code, body, _ = await api.call("POST", f"builds/{build['id']}/cancel")
    assert code == 202
    while (msg := await ws.read_message()) is not None:
        seen.extend(json.loads(msg))
    assert ws.close_code == 1000
    assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))
    assert texts(seen)[:3000] == [str(i) for i in range(1, 3001)]
    assert statuses(seen)[-1] == "cancelled"
    final = other_server.call("GET", f"builds/{build['id']}")
    assert final["status"] == "cancelled" and final["finished_at"]


async def test_quota_is_shared_between_servers(api: Api, other_server: ServerProcess) -> None:
    service = api.app.web_app.settings["agentbuild"].service
    service.builds_per_window = 3
    # Same owner on both (each server's OS user); the other server allows 60, this one 3.
    for _ in range(3):
        other_server.call("POST", "builds", {"steps": ["true"]})
    status, body, headers = await api.call("POST", "builds", {"steps": ["true"]})
    assert status == 429 and "Retry-After" in headers


async def test_another_servers_commit_wakes_waiting_readers(api: Api, postgres_url: str) -> None:  # noqa: F811
    """LISTEN/NOTIFY: a reader waiting on a build wakes when another store commits to it."""
    import asyncio
    import time

    from jupyter_agentbuild.store import Store

    store = api.app.web_app.settings["agentbuild"].store
    assert store.notifier.listening
    build = await api.create({"steps": ["true"]})
    await api.finish(build["id"])
    other = await Store.open(postgres_url)
    try:
        row = await other.get_build(build["id"])
        assert row is not None
        started = time.monotonic()
        waiter = asyncio.create_task(store.notifier.wait(build["id"], 30.0))
        await asyncio.sleep(0)  # let the waiter register before the commit
        await other.append_chunks(build["id"], [(row.last_seq + 1, ['{"seq":0}'])])
        await waiter
        assert time.monotonic() - started < 10
    finally:
        await other.dispose()


async def test_another_server_stops_or_deletes_this_servers_preview(
    api: Api, other_server: ServerProcess
) -> None:
    """A preview runs where its build ran; a server sharing the database asks that one to
    stop it (202), or deletes the build: either way it stops within a poll, port freed."""
    import asyncio
    import urllib.error

    from tests.preview.conftest import port_open

    manager = api.app.web_app.settings["agentbuild"].previews
    preview_spec = {"command": "exec python3 -m http.server $PORT --bind 127.0.0.1"}
    for action in ("stop", "delete"):
        build = await api.create({"steps": ["echo built"], "preview": preview_spec})
        final = await api.finish(build["id"])
        assert final["preview"]["state"] == "ready", final["preview"]
        preview = manager.get(build["id"])
        port = preview.pool.port
        path = f"builds/{build['id']}"
        if action == "stop":
            asked = await asyncio.to_thread(other_server.call, "POST", f"{path}/preview/stop")
            assert other_server.last_status == 202  # accepted; this server carries it out
            assert asked["preview"]["state"] == "ready"
        else:
            await asyncio.to_thread(other_server.call, "DELETE", path)
        await asyncio.wait_for(preview.closed.wait(), 30)
        assert manager.get(build["id"]) is None and not port_open(port)
        if action == "stop":
            stopped = await api.get(build["id"])
            assert stopped["preview"]["state"] == "stopped"
            assert stopped["preview"]["reason"] == "stopped by request"
            with pytest.raises(urllib.error.HTTPError) as again:
                await asyncio.to_thread(other_server.call, "POST", f"{path}/preview/stop")
            assert again.value.code == 409
        else:
            code, _, _ = await api.call("GET", path)
            assert code == 404


@pytest.fixture
def plain_other_server(tmp_path: Path, postgres_url: str) -> Iterator[ServerProcess]:  # noqa: F811
    """:func:`other_server` running builds as plain processes (which can be orphaned)."""
    from tests.server.test_lifecycle import UNISOLATED

    other = tmp_path / "other"
    other.mkdir()
    srv = ServerProcess(other, db_url=postgres_url, extra_args=UNISOLATED)
    srv.start()
    yield srv
    srv.stop()


async def test_a_preview_whose_server_died_here_is_stopped_from_another(
    api: Api, plain_other_server: ServerProcess
) -> None:
    """The preview's server was killed (-9) on this host, its preview process orphaned: a
    stop asked on this server finds the dead pid and stops it here, port freed. (Only
    plain processes can be orphaned: an isolated preview dies with its server.)"""
    import asyncio

    from tests.notebook.serverproc import free_port
    from tests.preview.conftest import port_open

    other_server = plain_other_server

    port = free_port()
    spec = {
        "steps": ["true"],
        "preview": {"command": "exec python3 -m http.server $PORT --bind 127.0.0.1", "port": port},
    }
    build = await asyncio.to_thread(other_server.call, "POST", "builds", spec)
    await api.stream(build["id"])  # ends with the build: its preview is ready by then
    assert (await api.get(build["id"]))["preview"]["state"] == "ready"
    assert other_server.proc is not None
    other_server.proc.kill()  # SIGKILL: no shutdown hook stops the preview
    other_server.proc.wait()
    assert port_open(port)  # the orphan still serves
    code, stopped, _ = await api.call("POST", f"builds/{build['id']}/preview/stop")
    assert code == 200, stopped
    assert stopped["preview"]["state"] == "stopped"
    assert "stopped by request" in stopped["preview"]["reason"]
    assert not port_open(port)

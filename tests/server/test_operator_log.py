"""Operators see builds in the Jupyter server's own log: each lifecycle transition once,
with the build's id and owner; a failed clean-up is logged, and a sandbox that could not
be destroyed stays recorded until it is really gone."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api, read_until


class Records(logging.Handler):
    """A handler on the server's logger: what the server log shows."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, build_id: str) -> list[str]:
        """The extension's lines about ``build_id`` (not the server's request log)."""
        return [
            r.getMessage()
            for r in self.records
            if r.name.startswith("jupyter_agentbuild") and build_id in r.getMessage()
        ]


@pytest.fixture
def server_log(api: Api) -> Iterator[Records]:
    handler = Records()
    api.app.log.addHandler(handler)
    yield handler
    api.app.log.removeHandler(handler)


def one(lines: list[str], fragment: str) -> str:
    found = [line for line in lines if fragment in line]
    assert len(found) == 1, (fragment, lines)
    return found[0]


async def test_each_transition_is_logged_once_with_id_and_owner(
    api: Api, server_log: Records
) -> None:
    ok = await api.create({"steps": ["echo hi"]})
    bad = await api.create({"steps": ["exit 3"]})
    await api.finish(ok["id"])
    await api.finish(bad["id"])
    slow = await api.create({"steps": ["echo started; sleep 60"]})
    ws = await api.ws_fetch("agentbuild", "api", "builds", slow["id"], "stream")
    await read_until(ws, lambda seen: any(e.get("text") == "started" for e in seen))
    code, _, _ = await api.call("POST", f"builds/{slow['id']}/cancel")
    assert code == 202
    owner = ok["owner"]
    for build, end in ((ok, "succeeded"), (bad, "failed (exit code 3)"), (slow, "cancelled")):
        lines = server_log.lines(build["id"])
        assert all(owner in line for line in lines), lines
        one(lines, "queued")
        one(lines, "started in sandbox")
        one(lines, f"of {owner} {end}")
        assert len(lines) == 3, lines
    records = [
        r
        for r in server_log.records
        if r.name.startswith("jupyter_agentbuild") and ok["id"] in r.getMessage()
    ]
    assert {r.name for r in records} == {"jupyter_agentbuild.runner"}
    assert all(r.levelno == logging.INFO for r in records)


async def test_a_failed_destroy_is_logged_and_the_sandbox_stays_recorded_until_gone(
    api: Api, server_log: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    agentbuild = api.app.web_app.settings["agentbuild"]
    provider = agentbuild.runner.providers["local"]
    create = provider.create
    failures = 0

    async def create_with_a_stuck_destroy(*args: Any, **kwargs: Any) -> Any:
        sandbox = await create(*args, **kwargs)

        async def destroy() -> None:  # the fault injected: the real provider removes it later
            nonlocal failures
            failures += 1
            raise OSError("injected: device or resource busy")

        sandbox.destroy = destroy
        return sandbox

    monkeypatch.setattr(provider, "create", create_with_a_stuck_destroy)
    build = await api.create({"steps": ["echo hi > left.txt"]})
    final = await api.finish(build["id"])
    assert final["status"] == "succeeded" and failures == 1
    row = await agentbuild.store.get_build(build["id"])
    assert row.sandbox_state and row.sandbox_state["build_id"] == build["id"]
    directory = Path(row.sandbox_state["dir"])
    left = await asyncio.to_thread(lambda: [p.name for p in directory.rglob("left.txt")])
    assert left == ["left.txt"]  # what the build left is still there
    warning = one(server_log.lines(build["id"]), "destroying sandbox")
    assert "injected: device or resource busy" in warning and "stays recorded" in warning
    # The runner's heartbeat (every 0.5 s here) removes it with the provider's own remove.
    deadline = time.monotonic() + 30
    while (await agentbuild.store.get_build(build["id"])).sandbox_state is not None:
        assert time.monotonic() < deadline, "the leftover sandbox was never removed"
        await asyncio.sleep(0.1)  # polling the store for the heartbeat's work
    assert not await asyncio.to_thread(directory.exists)
    one(server_log.lines(build["id"]), f"sandbox {row.sandbox_id} of build {build['id']} removed")


async def test_reconciling_a_dead_servers_build_is_logged_once(
    api: Api, server_log: Records
) -> None:
    agentbuild = api.app.web_app.settings["agentbuild"]
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()  # its pid is gone: the "server" that ran the build died
    row = await agentbuild.store.insert_build(
        id="deadbeef00000001",
        owner="someone",
        name="orphan",
        status="running",
        provider="local",
        spec={"steps": [{"run": "true"}]},
        created_at=datetime.now(UTC),
        runner_id="a-dead-server",
        runner_host=socket.gethostname(),
        runner_pid=dead.pid,
    )
    await agentbuild.runner.reconcile()
    await agentbuild.runner.reconcile()  # once per transition: nothing more to say
    line = one(server_log.lines(row.id), "interrupted")
    assert (
        line == f"agentbuild: build {row.id} of someone interrupted: its server died (sandbox none)"
    )
    ended = await agentbuild.store.get_build(row.id)
    assert ended.status == "interrupted"

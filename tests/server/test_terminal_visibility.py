"""The terminal status entry and the terminal row become visible together, at once."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import Api, statuses

#: Far longer than any build here: nothing may wait for the flush timer.
FLUSH_INTERVAL = 30.0


@pytest.fixture
def agentbuild_config(agentbuild_config: dict[str, Any]) -> dict[str, Any]:
    return {**agentbuild_config, "log_flush_interval": FLUSH_INTERVAL}


@pytest.mark.parametrize(
    "script, status, code", [("echo hi", "succeeded", 0), ("exit 4", "failed", 4)]
)
async def test_a_client_that_saw_the_end_reads_the_terminal_build(
    api: Api, script: str, status: str, code: int
) -> None:
    began = time.monotonic()
    build = await api.create({"steps": [script]})
    ws = await api.ws_fetch("agentbuild", "api", "builds", build["id"], "stream")
    seen: list[dict[str, Any]] = []
    while not (seen and seen[-1].get("type") == "status" and seen[-1]["data"]["status"] == status):
        message = await ws.read_message()
        assert message is not None, seen
        seen.extend(json.loads(message))
    # GET at once, upon the entry: the row must already say the same.
    row = await api.get(build["id"])
    assert row["status"] == status and row["exit_code"] == code
    assert row["finished_at"] is not None and row["last_seq"] == seen[-1]["seq"]
    assert await ws.read_message() is None and ws.close_code == 1000
    assert time.monotonic() - began < FLUSH_INTERVAL  # the end never waited for the timer
    assert statuses(seen) == ["queued", "starting", "running", status]
    page = await api.all_logs(build["id"])
    assert page == seen

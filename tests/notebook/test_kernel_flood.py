"""A flood of output: the widget's traffic is bounded by time, not by the number of lines."""

from __future__ import annotations

import asyncio
import re

import pytest

from .conftest import LOAD
from .kernel import KernelSession

pytestmark = pytest.mark.slow

LINES = 300_000


async def test_flood_is_batched_and_capped(kernel: KernelSession) -> None:
    await kernel.execute(LOAD)
    loop = asyncio.get_running_loop()
    began = loop.time()
    run = await kernel.execute(
        f'%%agentbuild --name flood\nseq 1 {LINES} | sed "s/^/row /"\necho "the end"'
    )
    assert run.status == "ok" and run.seconds < 10.0  # at once, even on a loaded machine
    kernel.comm_msgs = kernel.comm_bytes = 0

    probe = await kernel.execute("1+1")  # the kernel answers while the widget streams
    assert probe.results[0]["text/plain"] == "2"

    def done() -> bool:
        return (
            any("succeeded" in v for v in kernel.status_values()) and "the end" in kernel.log_html()
        )

    await kernel.wait_for(done, within=120)
    elapsed = loop.time() - began
    blocks = [str(s.get("value", "")) for s in kernel.with_class("agentbuild-log-block")]
    shown = sum(v.count("\n") + 1 for v in blocks if v)
    assert shown <= 2000
    assert "row 300000" in kernel.log_html()
    hidden = [
        str(s.get("value", ""))
        for s in kernel.comms.values()
        if "earlier lines" in str(s.get("value", ""))
    ]
    assert hidden and re.search(r"… [\d,]+ earlier lines not shown", hidden[-1])
    # At most ~10 flushes a second, each touching at most every block and the header.
    assert kernel.comm_msgs <= (elapsed / 0.1 + 10) * 30
    assert kernel.comm_msgs < LINES / 100

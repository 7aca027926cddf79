"""The blocking Client from inside a kernel (whose own asyncio loop is running)."""

from __future__ import annotations

import json

import pytest

from .kernel import KernelSession

pytestmark = pytest.mark.slow

CODE = r"""
import asyncio, json
from jupyter_agentbuild.client import Client, Conflict, NotFound
asyncio.get_running_loop()  # the kernel's loop runs: the Client must not need it
c = Client()
b = c.start(name="from-kernel", steps=["echo hello; echo world"])
final = c.wait(b.id, timeout=60)
lines = [e["text"] for e in c.logs(b.id) if e["kind"] == "log"]
followed = [e["seq"] for e in c.logs(b.id, follow=True)]
listed = [x.id for x in c.list(limit=5)]
try:
    c.cancel(b.id)
    conflict = None
except Conflict as exc:
    conflict = exc.status
c.delete(b.id)
try:
    c.get(b.id)
    missing = None
except NotFound as exc:
    missing = exc.status
print(json.dumps({
    "status": final.status, "exit_code": final.exit_code, "lines": lines,
    "followed": followed == list(range(1, final.last_seq + 1)),
    "listed": b.id in listed, "conflict": conflict, "missing": missing,
    "token_hidden": c.server.token not in repr(c) if c.server.token else True,
}))
"""


async def test_client_round_trip_inside_the_kernel(kernel: KernelSession) -> None:
    run = await kernel.execute(CODE, within=90)
    assert run.status == "ok", run.error
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out == {
        "status": "succeeded",
        "exit_code": 0,
        "lines": ["hello", "world"],
        "followed": True,
        "listed": True,
        "conflict": 409,
        "missing": 404,
        "token_hidden": True,
    }

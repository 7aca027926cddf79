"""Fixtures for notebook tests: a real kernel started through the real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from .kernel import KernelSession

# Loads the magics module directly; test_load_ext checks `%load_ext jupyter_agentbuild`.
LOAD = "%load_ext jupyter_agentbuild.magics"


@pytest.fixture
def kernel(
    api: Any, jp_fetch: Any, jp_ws_fetch: Any, jp_asyncio_loop: Any
) -> Iterator[KernelSession]:
    """A python3 kernel started with ``POST api/kernels``: it inherits the server's env."""

    async def start() -> KernelSession:
        body = json.dumps({"name": "python3"})
        resp = await jp_fetch("api", "kernels", method="POST", body=body)
        kernel_id = json.loads(resp.body)["id"]
        ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
        session = KernelSession(ws, kernel_id)
        ready = await session.execute("pass", within=120)  # answered: the kernel is up
        assert ready.status == "ok"
        return session

    # a sync fixture (pytest-jupyter runs no async fixtures), on the tests' own loop
    session = jp_asyncio_loop.run_until_complete(start())
    try:
        yield session
    finally:
        session.ws.close()
        jp_asyncio_loop.run_until_complete(
            jp_fetch("api", "kernels", session.kernel_id, method="DELETE")
        )

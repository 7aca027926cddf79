"""Bodies of known length moved inside the kernel (``os.splice``): every byte intact, the
browser's keep-alive connection still served by tornado afterwards, and a browser that
leaves in the middle cutting the preview's connection without harming the next request."""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

import pytest

from jupyter_agentbuild.preview import splice, upstream
from tests.preview.conftest import WAIT, Previews

pytestmark = pytest.mark.skipif(not hasattr(splice.os, "splice"), reason="Linux only")


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    match = re.search(rb"Content-Length: (\d+)", head)
    assert match is not None, head
    body = await asyncio.wait_for(reader.readexactly(int(match.group(1))), WAIT)
    return int(head.split()[1]), body


async def test_spliced_bodies_are_intact_on_one_keep_alive_connection(
    previews: Previews, monkeypatch: pytest.MonkeyPatch
) -> None:
    spliced: list[int] = []

    async def counted(*args: Any, **kwargs: Any) -> None:
        spliced.append(args[2])
        await splice.splice_body(*args, **kwargs)

    monkeypatch.setattr(upstream, "splice_body", counted)
    build = await previews.start()
    bid = build["id"]
    own = previews.own_host(build)
    ways = [
        (previews.path(bid, ""), f"127.0.0.1:{previews.port}", f"token {previews.token}"),
        ("", own, None),
    ]
    for prefix, host, auth in ways:
        reader, writer = await asyncio.open_connection("127.0.0.1", previews.port)
        try:
            for size in (3 * 2**20 + 7, 2**18 + 1):
                for target in (f"/random?size={size}", "/tiny"):
                    extra = f"Authorization: {auth}\r\n" if auth else ""
                    request = f"GET {prefix}{target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n"
                    writer.write(request.encode())
                    status, body = await read_answer(reader)
                    assert status == 200, (host, target, body[:200])
                    if target == "/tiny":
                        assert body == b"ok"
                    else:
                        assert body == random.Random(size).randbytes(size), (host, size)
        finally:
            writer.close()
    assert len(spliced) == 4, "each body (after its first piece) went through the kernel"
    # the preview's connection went back to the pool after each spliced body
    assert previews.manager.get(bid).pool.opened <= 2


async def test_a_browser_leaving_mid_body_cuts_the_upstream_only(previews: Previews) -> None:
    build = await previews.start()
    bid = build["id"]
    pool = previews.manager.get(bid).pool
    reader, writer = await asyncio.open_connection("127.0.0.1", previews.port)
    writer.write(
        f"GET {previews.path(bid, '/big?size=2000000000')} HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: token {previews.token}\r\n\r\n".encode()
    )
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    await asyncio.wait_for(reader.readexactly(4 * 2**20), WAIT)
    writer.transport.abort()  # reset, not a polite close
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    # the relay notices at its next write; nothing announces the release to await
    while pool.in_use and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert not pool.in_use and not pool.idle, "the cut connection is not kept"
    again = await previews.fetch(bid, "/random?size=1000000")
    assert again.code == 200 and again.body == random.Random(1000000).randbytes(1000000)

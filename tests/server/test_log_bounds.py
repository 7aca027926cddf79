"""Memory per build and per reader is bounded in bytes: the log cap (``max_log_bytes``),
REST pages and WebSocket frames (``max_page_bytes``), and slow readers of a big log."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import Api, texts
from tests.server.test_lifecycle import TOKEN, ServerProcess

PAGE_BYTES = 256 * 1024
LOG_CAP = 1024**2


@pytest.fixture
def agentbuild_config(agentbuild_config: dict[str, Any]) -> dict[str, Any]:
    return {**agentbuild_config, "max_page_bytes": PAGE_BYTES, "max_log_bytes": LOG_CAP}


def no_newline(megabytes: int) -> str:
    return f"head -c {megabytes * 1024**2} /dev/zero | tr '\\0' x"


async def test_output_beyond_max_log_bytes_is_dropped_once_and_the_build_goes_on(
    api: Api,
) -> None:
    build = await api.create({"steps": [no_newline(30) + "; echo; echo gone", "echo second"]})
    entries, code = await api.stream(build["id"])
    final = await api.get(build["id"])
    assert code == 1000 and final["status"] == "succeeded" and final["exit_code"] == 0
    logged = sum(len(t.encode()) for t in texts(entries))
    assert LOG_CAP - 65536 < logged <= LOG_CAP
    truncated = [e for e in entries if e.get("type") == "log_truncated"]
    assert len(truncated) == 1
    assert truncated[0]["data"]["max_log_bytes"] == LOG_CAP
    assert "max_log_bytes" in truncated[0]["data"]["message"]
    after = [e for e in entries if e["seq"] > truncated[0]["seq"]]
    assert not [e for e in after if e["kind"] == "log"]  # nothing after the cap
    finished = [e["data"] for e in after if e.get("type") == "step_finished"]
    assert [(f["step"], f["exit_code"]) for f in finished] == [(0, 0), (1, 0)]
    assert await api.all_logs(build["id"]) == entries


async def test_pages_and_frames_are_bounded_in_bytes(api: Api) -> None:
    build = await api.create({"steps": [no_newline(1) + "; echo; seq 1 5000"]})
    ws = await api.ws_fetch("agentbuild", "api", "builds", build["id"], "stream")
    live: list[dict[str, Any]] = []
    while (message := await ws.read_message()) is not None:
        assert len(message.encode()) <= PAGE_BYTES + 2  # the array's brackets
        live.extend(json.loads(message))
    assert [e["seq"] for e in live] == list(range(1, len(live) + 1))
    # Caught up from the store, after the build: the same bound, the same entries.
    entries, code = await api.stream(build["id"])
    assert code == 1000 and entries == live
    after, pages = 0, 0
    while True:
        resp = await api.fetch(
            "agentbuild",
            "api",
            "builds",
            build["id"],
            "logs",
            params={"after": after, "limit": 10000},
        )
        assert len(resp.body) <= PAGE_BYTES + 100  # the page's envelope
        page = json.loads(resp.body)
        pages += 1
        assert page["entries"] and page["entries"][0]["seq"] == after + 1
        assert page["entries"] == live[after : after + len(page["entries"])]
        after = page["entries"][-1]["seq"]
        # `done` still means: finished, and this page reaches the last entry.
        assert page["done"] == (after == live[-1]["seq"])
        if page["done"]:
            break
    assert pages >= 4  # 1 MiB of pieces and 5000 lines cannot fit fewer pages
    _, small, _ = await api.call("GET", f"builds/{build['id']}/logs", params={"limit": 3})
    assert [e["seq"] for e in small["entries"]] == [1, 2, 3]  # limit still counts entries


# -- slow readers of a big log, measured on a real server process ---------------------------

BIG_MB = 40


@pytest.fixture
def big_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerProcess]:
    """A server with the default limits (a config dir of its own keeps them clean)."""
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    srv = ServerProcess(tmp_path)
    srv.start()
    yield srv
    srv.stop()


def slow_socket(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(60)
    return sock


def read_head(sock: socket.socket) -> bytes:
    """Read until the end of the response headers; returns what came after them."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    assert head.split(b" ")[1] in (b"200", b"101"), head
    return rest


def first_frame_size(sock: socket.socket, rest: bytes) -> int:
    """The payload length that the first WebSocket frame header announces."""
    while len(rest) < 10:
        rest += sock.recv(10 - len(rest))
    size = rest[1] & 0x7F
    if size == 126:
        return int.from_bytes(rest[2:4], "big")
    if size == 127:
        return int.from_bytes(rest[2:10], "big")
    return size


def test_slow_readers_of_a_big_log_hold_little_server_memory(big_server: ServerProcess) -> None:
    build = big_server.call("POST", "builds", {"steps": [no_newline(BIG_MB)]})
    deadline = time.monotonic() + 120
    while big_server.call("GET", f"builds/{build['id']}")["status"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.1)  # polling another process's public API
    assert big_server.proc is not None
    proc = psutil.Process(big_server.proc.pid)
    before = proc.memory_info().rss
    path = f"/agentbuild/api/builds/{build['id']}"
    readers: list[socket.socket] = []
    frames: list[int] = []
    try:
        for _ in range(4):  # REST readers that never read their page
            sock = slow_socket(big_server.port)
            sock.sendall(
                f"GET {path}/logs?limit=10000 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: token {TOKEN}\r\n\r\n".encode()
            )
            read_head(sock)  # the page is built: tornado writes it whole
            readers.append(sock)
        for _ in range(3):  # WebSocket readers that never read past a frame header
            sock = slow_socket(big_server.port)
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                f"GET {path}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: token {TOKEN}\r\n\r\n".encode()
            )
            frames.append(first_frame_size(sock, read_head(sock)))
            readers.append(sock)
        grown = proc.memory_info().rss - before
    finally:
        for sock in readers:
            sock.close()
    assert max(frames) <= 2 * 1024**2 + 2
    # Unbounded pages and frames held the whole 40 MB log per reader (several times).
    assert grown < 100 * 1024**2, f"RSS grew by {grown / 1024**2:.0f} MiB"
    print(f"slow readers: RSS +{grown / 1024**2:.1f} MiB, frames {frames}")


async def test_frames_end_at_shared_boundaries_so_readers_share_them(api: Api) -> None:
    """Readers that fall apart meet again: no frame crosses a multiple of FRAME_ENTRIES,
    so readers at any cursor end their frames at the same seqs from there on, and the
    server encodes each of those frames once for all of them."""
    from jupyter_agentbuild.handlers.stream import FRAME_ENTRIES

    build = await api.create({"steps": ["seq 1 12000"]})
    readers = [
        await api.ws_fetch(
            "agentbuild", "api", "builds", build["id"], "stream", params={"after": str(after)}
        )
        for after in (0, 1234)
    ]
    for after, ws in zip((0, 1234), readers, strict=True):
        expected = after + 1
        while (message := await ws.read_message()) is not None:
            frame = json.loads(message)
            first, last = frame[0]["seq"], frame[-1]["seq"]
            assert first == expected and last - first + 1 == len(frame)
            assert (first - 1) // FRAME_ENTRIES == (last - 1) // FRAME_ENTRIES, (first, last)
            expected = last + 1
        assert expected > 12000

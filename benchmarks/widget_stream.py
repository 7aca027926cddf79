"""Benchmark: a build widget following a very long build.

Starts a real Jupyter server (with the extension) and a kernel through it, runs
``%%agentbuild`` with a script that prints N lines (default 1,000,000), and, acting as the
front end over the kernel WebSocket, measures:

- the comm messages the widget sends (count and bytes) until it shows ``succeeded``;
- how responsive the kernel stays: the round trip of ``1+1`` executed every 0.25 s while
  the widget streams.

    python benchmarks/widget_stream.py [--lines N] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.notebook.kernel import KernelSession  # noqa: E402
from tests.notebook.serverproc import JupyterProcess  # noqa: E402


def summary(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "median": round(statistics.median(values), 4),
        "max": round(max(values), 4),
    }


async def probe(k: KernelSession) -> float:
    t0 = time.monotonic()
    result = await k.execute("1+1", within=60)
    assert result.results and result.results[0]["text/plain"] == "2"
    return time.monotonic() - t0


async def probe_until(k: KernelSession, done: Any) -> list[float]:
    """Run ``1+1`` about every quarter second until ``done()``; return the round trips."""
    latencies: list[float] = []
    while True:
        latencies.append(await probe(k))
        if done():
            return latencies
        try:  # read what the kernel sends for a quarter second, then probe again
            await k.wait_for(done, within=0.25)
        except TimeoutError:
            continue
        return latencies


async def stream_to_end(port: int, headers: dict[str, str], build_id: str) -> None:
    url = f"ws://127.0.0.1:{port}/agentbuild/api/builds/{build_id}/stream?after=0"
    conn = await websocket_connect(HTTPRequest(url, headers=headers), max_message_size=1 << 28)
    while await conn.read_message() is not None:
        pass


async def run(lines: int, port: int, token: str) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}/"
    headers = {"Authorization": f"token {token}"}
    http = AsyncHTTPClient()
    resp = await http.fetch(
        HTTPRequest(base + "api/kernels", method="POST", body='{"name":"python3"}', headers=headers)
    )
    kernel_id = json.loads(resp.body)["id"]
    ws = await websocket_connect(
        HTTPRequest(f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels", headers=headers),
        max_message_size=256 * 1024 * 1024,
    )
    k = KernelSession(ws, kernel_id)
    await k.execute("%load_ext jupyter_agentbuild.magics", within=120)
    await k.execute("%%agentbuild --quiet --wait\ntrue", within=60)  # warm up the imports
    idle = [await probe(k) for _ in range(10)]
    script = f'seq 1 {lines} | sed "s/^/line /"\necho "the end"'

    # The same build with no widget: what the build itself costs the machine.
    quiet = await k.execute(f"%%agentbuild --quiet --name bench-quiet\n{script}")
    build_id = quiet.stdout.split("(")[-1].split(")")[0]
    follower = asyncio.create_task(stream_to_end(port, headers, build_id))
    quiet_latencies = await probe_until(k, follower.done)
    await follower

    began = time.monotonic()
    cell = await k.execute(f"%%agentbuild --name bench\n{script}")
    assert cell.status == "ok", cell.error
    returned = time.monotonic() - began
    k.comm_msgs = k.comm_bytes = 0

    def done() -> bool:
        return any("succeeded" in v for v in k.status_values()) and "the end" in k.log_html()

    latencies = await probe_until(k, done)
    finished = time.monotonic() - began
    blocks = [s.get("value", "") for s in k.with_class("agentbuild-log-block")]
    shown = sum(v.count("\n") + 1 for v in blocks if v)
    ws.close()
    await http.fetch(
        HTTPRequest(base + f"api/kernels/{kernel_id}", method="DELETE", headers=headers)
    )
    return {
        "lines": lines,
        "cell_returned_s": round(returned, 3),
        "build_followed_s": round(finished, 2),
        "comm_messages": k.comm_msgs,
        "comm_bytes": k.comm_bytes,
        "comm_messages_per_s": round(k.comm_msgs / finished, 1),
        "lines_shown": shown,
        "1+1_seconds": {
            "idle": summary(idle),
            "build_running_without_widget": summary(quiet_latencies),
            "widget_following_the_build": summary(latencies),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, JupyterProcess(Path(tmp)) as server:
        result = asyncio.run(run(opts.lines, server.port, server.token))
    print(json.dumps(result, indent=2))
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

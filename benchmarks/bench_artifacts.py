"""Artifact benchmark: collect a 1 GB workspace and download it as zip and tar.gz.

Run:  python benchmarks/bench_artifacts.py                (about a minute; prints a table)
      python benchmarks/bench_artifacts.py --large 200 --small 4000     (quicker)

The workspace (under a real server's root, copied into the build's sandbox) holds
1,000 files of 1 MB (half random bytes, half text) and 20,000 small text files
(200 B - 8 KB). A build with ``artifacts: {"paths": ["**"]}`` collects all of it.
Measured against baselines run in this same script on the same files (the machine is
shared and noisy):

- collection time: from the step's end to the ``artifacts_ready`` event (event times);
- ``artifacts.zip`` and ``artifacts.tar.gz`` download throughput, read by a client that
  counts and discards the bytes, vs ``zip -r -0 -q -`` and ``tar -cf -`` (and
  ``tar -cf - | gzip -1``, the same work as the tar.gz) read the same way;
- peak growth of the server's RSS (sampled every 10 ms with psutil) during each
  download, which must stay under 64 MB; the downloads are made from a freshly started
  server (same database and artifact store), so memory grown while collecting cannot
  hide what a download needs.

Needs ``zip`` (``apt-get install -y zip``) for the zip baseline; without it that line is
skipped.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from harness import JupyterServer, RssSampler

TOKEN = "bench-artifacts-token"
MB = 1024 * 1024
RSS_LIMIT = 64 * MB


class Server(JupyterServer):
    """The extension's server, with raw downloads measured by :meth:`download`."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, TOKEN)

    def _conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        conn = self._conn()
        try:
            conn.request(
                method,
                f"/agentbuild/api/{path}",
                body=json.dumps(body) if body is not None else None,
                headers={"Authorization": f"token {TOKEN}"},
            )
            resp = conn.getresponse()
            data = resp.read()
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: {resp.status} {data[:500]!r}")
            return json.loads(data) if data else None
        finally:
            conn.close()

    def download(self, path: str) -> tuple[int, float, dict[str, str]]:
        """(bytes, seconds, headers) of a GET read in 1 MB pieces and discarded."""
        conn = self._conn()
        try:
            began = time.perf_counter()
            conn.request(
                "GET", f"/agentbuild/api/{path}", headers={"Authorization": f"token {TOKEN}"}
            )
            resp = conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"GET {path}: {resp.status} {resp.read()[:500]!r}")
            total = 0
            while chunk := resp.read(MB):
                total += len(chunk)
            return total, time.perf_counter() - began, dict(resp.getheaders())
        finally:
            conn.close()


def make_workspace(root: Path, large: int, small: int, seed: int = 4) -> int:
    """Write the workspace; return its size in bytes."""
    rng = random.Random(seed)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
        for _ in range(5000)
    ]
    text = " ".join(rng.choice(words) for _ in range(300_000)).encode()[: 2 * MB]
    total = 0
    for i in range(large):
        folder = root / "dist" / "assets" / f"chunk{i // 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        if i % 2:
            data = os.urandom(MB)
        else:
            start = rng.randrange(MB)
            data = text[start : start + MB]
        (folder / f"bundle-{i:04d}.bin").write_bytes(data)
        total += len(data)
    for i in range(small):
        folder = root / "dist" / "pages" / f"section{i // 500:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        size = rng.randint(200, 8000)
        start = rng.randrange(len(text) - size)
        (folder / f"page-{i:05d}.html").write_bytes(text[start : start + size])
        total += size
    return total


def baseline(command: str, cwd: Path) -> tuple[int, float]:
    """(bytes, seconds) of a shell pipeline's stdout, read in 1 MB pieces and discarded."""
    began = time.perf_counter()
    proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    total = 0
    while chunk := proc.stdout.read(MB):
        total += len(chunk)
    if proc.wait() != 0:
        raise RuntimeError(f"{command} failed")
    return total, time.perf_counter() - began


def stamp(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--large", type=int, default=1000, help="1 MB files (default 1000)")
    parser.add_argument("--small", type=int, default=20_000, help="small files (default 20000)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-artifacts-") as tmp_name:
        tmp = Path(tmp_name)
        workspace = tmp / "root" / "ws"
        workspace.mkdir(parents=True)
        t0 = time.perf_counter()
        size = make_workspace(workspace, args.large, args.small)
        files = args.large + args.small
        print(
            f"workspace: {files:,} files, {size / MB:,.0f} MB (written in {time.perf_counter() - t0:.1f}s)"
        )

        server = Server(tmp)
        try:
            with RssSampler(server) as collect_rss:
                began = time.perf_counter()
                build = server.call(
                    "POST", "builds",
                    {"workspace": "ws", "steps": ["true"], "artifacts": {"paths": ["**"]}},
                )  # fmt: skip
                bid = build["id"]
                while True:
                    final = server.call("GET", f"builds/{bid}")
                    if final["finished_at"]:
                        break
                    time.sleep(0.2)
                wall = time.perf_counter() - began
            assert final["status"] == "succeeded", final
            entries = server.call("GET", f"builds/{bid}/logs?limit=1000")["entries"]
            by_type = {e.get("type"): e for e in entries if e["kind"] == "event"}
            collect = stamp(by_type["artifacts_ready"]) - stamp(by_type["step_finished"])
            ready = by_type["artifacts_ready"]["data"]
            assert ready["count"] == files and ready["total_size"] == size, ready

            server.stop()
            server = Server(tmp)
            rows: list[tuple[str, int, float, int | None]] = []
            fresh = server.rss()  # growth is measured from here, warm-ups included
            for name in ("zip", "tar.gz"):
                with RssSampler(server) as rss:
                    server.download(f"builds/{bid}/artifacts.{name}")  # warm-up
                    got, seconds, headers = server.download(f"builds/{bid}/artifacts.{name}")
                if name == "zip":
                    assert int(headers["Content-Length"]) == got
                rows.append((f"server artifacts.{name}", got, seconds, rss.peak - fresh))

            if shutil.which("zip"):
                got, seconds = baseline("zip -r -0 -q - ws", tmp / "root")
                rows.append(("baseline zip -r -0 -q", got, seconds, None))
            else:
                print("zip is not installed (apt-get install -y zip): no zip baseline")
            got, seconds = baseline("tar -cf - ws", tmp / "root")
            rows.append(("baseline tar -cf", got, seconds, None))
            got, seconds = baseline("tar -cf - ws | gzip -1", tmp / "root")
            rows.append(("baseline tar -cf | gzip -1", got, seconds, None))
        finally:
            server.stop()

    speed = {label: got / MB / seconds for label, got, seconds, _ in rows}
    print()
    print(f"collection: {collect:.2f}s for {files:,} files, {size / MB:,.0f} MB "
          f"({size / MB / collect:,.0f} MB/s); whole build {wall:.1f}s "
          f"(incl. copying the workspace into the sandbox); "
          f"server RSS growth {collect_rss.growth / MB:.1f} MB")  # fmt: skip
    print()
    print(f"{'download':32} {'MB':>8} {'s':>7} {'MB/s':>8} {'RSS growth':>11}")
    for label, got, seconds, growth in rows:
        grown = f"{growth / MB:.1f} MB" if growth is not None else ""
        print(f"{label:32} {got / MB:8.0f} {seconds:7.2f} {speed[label]:8.0f} {grown:>11}")
    print()
    ratios = [
        ("artifacts.zip / zip -r -0 -q", "server artifacts.zip", "baseline zip -r -0 -q"),
        ("artifacts.tar.gz / tar -cf", "server artifacts.tar.gz", "baseline tar -cf"),
        ("artifacts.tar.gz / tar -cf | gzip -1", "server artifacts.tar.gz",
         "baseline tar -cf | gzip -1"),
    ]  # fmt: skip
    for label, ours, theirs in ratios:
        if ours in speed and theirs in speed:
            print(f"throughput ratio {label:38} {speed[ours] / speed[theirs]:.2f}")
    worst = max(growth or 0 for *_, growth in rows)
    verdict = "OK" if worst < RSS_LIMIT else "OVER"
    print(f"peak server RSS growth during downloads: {worst / MB:.1f} MB "
          f"(limit {RSS_LIMIT // MB} MB): {verdict}")  # fmt: skip
    if worst >= RSS_LIMIT:
        sys.exit(1)


if __name__ == "__main__":
    main()

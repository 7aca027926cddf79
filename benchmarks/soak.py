"""Soak and fault run: many builds, many readers, a database restart and a server crash.

Run:  python benchmarks/soak.py                 (10 minutes; prints a summary table)
      python benchmarks/soak.py --minutes 1      (the CI version: tests/test_soak.py)

What it does, for ``--minutes`` (default 10):

- a PRIVATE PostgreSQL cluster (``initdb`` in a temp dir, another port, run as the
  ``postgres`` user through ``runuser``), shared by TWO Jupyter servers (A and B);
- ``--builds`` (20) builds kept running at all times, from ``--owners`` (4) owners, spread
  over both servers, each printing at its own rate (1 to 1,000 lines/s, some in bursts);
- ``--clients`` (10) WebSocket clients, each following one build after another, dropping
  the connection at random and reconnecting (to either server) with ``after=<last seq>``;
- meanwhile: PostgreSQL restarted once (at 30 %), server A killed with SIGKILL and started
  again (at 55 %), and some builds cancelled (through either server).

Every line a build prints carries its number and the time it was printed; the printer
also reports the lines it handed to its stdout pipe to a counter this script serves on
loopback (the builds run in the default isolated sandbox, which can reach the network but
can write no file outside its own directory).
The report: builds by final status; per client, entries stored vs received, lost,
duplicated, out of order (``seq`` must be contiguous); lines printed vs stored per
status; peak RSS per server; p50/p99 print-to-client latency (lines printed after the
client's connection opened); orphan processes (a printer still alive once every build
has ended).

What "lost" means: an entry stored but never received by a client that followed the build
to its end; a line printed but not stored where the design promises it (a build that
succeeded, failed or was cancelled: everything read before the end is stored). Lines a
server held in memory when it was killed with SIGKILL are not promised: they are counted
apart ("unstored at kill") for the builds of the killed server, which end ``interrupted``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import websockets
from jupyter_server.auth.identity import IdentityProvider, User
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from jupyter_agentbuild.vocabulary import ACTIVE, TERMINAL, BuildStatus, EntryKind, EventType

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "soak-token"
USER_HEADER = "X-Soak-User"
#: The ``?status=`` filter for builds that have not finished.
ACTIVE_FILTER = ",".join(ACTIVE)
#: Every status the servers answered (REST and WebSocket handshakes): a 500 is a defect,
#: a 503 while PostgreSQL restarts is the contract.
ANSWERS: Counter[int] = Counter()


class HeaderIdentity(IdentityProvider):
    """The servers' identities: the token authenticates, ``X-Soak-User`` names the owner
    (as JupyterHub's users would be). Loaded by the servers as ``soak.HeaderIdentity``."""

    async def get_user(self, handler: Any) -> User | None:  # type: ignore[override]
        user = await super().get_user(handler)
        name = handler.request.headers.get(USER_HEADER)
        return User(username=name) if user is not None and name else user


#: The build's printer: RATE lines/s, COUNT lines, BURST lines per write; after each
#: write into stdout, the number of lines written so far goes to the soak's counter
#: (SIDE is ``port:tag``). SIGTERM (a cancel) stops it between two writes, so the count
#: is exact.
PRINTER = r"""
import os, signal, socket, sys, time
rate, count, burst, side = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
out = sys.stdout
port, tag = side.split(":", 1)
counter = socket.create_connection(("127.0.0.1", int(port)))
mark = counter.makefile("w", buffering=1)
start, i = time.monotonic(), 0
while i < count and not stop:
    wait = start + i / rate - time.monotonic()
    if wait > 0:
        time.sleep(min(wait, 0.05))
        continue
    n = min(burst, count - i)
    now = time.time()
    text = "".join(f"soak {j} {now:.6f}\n" for j in range(i, i + n))
    try:
        out.write(text)
        out.flush()
    except (BrokenPipeError, OSError):
        os._exit(0)  # the server went away: nothing more can be printed
    i += n
    mark.write(f"{tag} {i}\n")
mark.close()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- PostgreSQL


class PrivateCluster:
    """A PostgreSQL cluster of our own (never the machine's shared one), as ``postgres``."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="agentbuild-soak-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = free_port()
        self.bin = _pg_bin()

    def _run(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.dir,
        )

    def start(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "pg.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "soak")

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/soak"

    def restart(self) -> float:
        """Restart (fast shutdown: sessions are cut); the seconds it was unavailable."""
        began = time.monotonic()
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "restart")
        return time.monotonic() - began

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_bin() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        raise RuntimeError("no initdb: install PostgreSQL's server binaries")
    return versions[-1].parent


# --------------------------------------------------------------------------- servers


class Server:
    """A `jupyter server` with the extension, on the shared database; restartable on the
    same port, its sandboxes in the same directory (so its restart reaps what it left)."""

    def __init__(self, name: str, tmp: Path, db_url: str, stale_after: float) -> None:
        self.name, self.tmp, self.db_url = name, tmp / name, db_url
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.incarnation = 0
        self.peak_rss: dict[str, int] = {}
        self.stale_after = stale_after
        self.alive = False

    @property
    def label(self) -> str:
        return self.name if self.incarnation <= 1 else f"{self.name} (restarted)"

    async def start(self) -> None:
        self.incarnation += 1
        log = open(self.tmp / f"server-{self.incarnation}.log", "wb")  # noqa: SIM115, ASYNC230
        env = {
            **os.environ,
            "JUPYTER_DATA_DIR": str(self.tmp / "data"),
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT / "benchmarks"), str(ROOT), os.environ.get("PYTHONPATH", "")]
            ),
        }
        (self.tmp / "root").mkdir(exist_ok=True)
        self.proc = subprocess.Popen(  # noqa: ASYNC220 (started once, not waited for)
            [
                sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser",
                f"--port={self.port}", "--ip=127.0.0.1", f"--ServerApp.root_dir={self.tmp / 'root'}",
                f"--IdentityProvider.token={TOKEN}", "--log-level=WARN",
                "--ServerApp.identity_provider_class=soak.HeaderIdentity",
                f"--AgentBuild.db_url={self.db_url}",
                f"--AgentBuild.workspace_root={self.tmp / 'sandboxes'}",
                f"--ArtifactService.root={self.tmp.parent / 'artifacts'}",
                "--AgentBuild.max_concurrent_builds=100",
                "--BuildService.builds_per_window=1000000",
                "--AgentBuild.kill_grace=2",
                "--AgentBuild.heartbeat_interval=1",
                f"--AgentBuild.stale_after={self.stale_after}",
            ],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 120
        while True:
            code, _ = await call(self, "GET", "builds?limit=1", wait=5)
            if code == 200:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.tmp / f"server-{self.incarnation}.log").read_text())
            await asyncio.sleep(0.2)  # another process getting ready: nothing to await
        self.alive = True

    def sample_rss(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(psutil.Error):
            rss = psutil.Process(self.proc.pid).memory_info().rss
            self.peak_rss[self.label] = max(self.peak_rss.get(self.label, 0), rss)

    def kill9(self) -> None:
        assert self.proc is not None
        self.alive = False
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    async def stop(self) -> None:
        self.alive = False
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.to_thread(self.proc.wait, 60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def call(
    server: Server, method: str, path: str, body: Any = None, owner: str | None = None,
    wait: float = 30,
) -> tuple[int, Any]:  # fmt: skip
    """A JSON call; ``(599, None)`` when the server cannot be reached."""
    headers = {"Authorization": f"token {TOKEN}"}
    if owner:
        headers[USER_HEADER] = owner
    request = HTTPRequest(
        f"http://127.0.0.1:{server.port}/agentbuild/api/{path}",
        method=method,
        headers=headers,
        body=json.dumps(body) if body is not None else ("" if method == "POST" else None),
        request_timeout=wait,
        connect_timeout=5,
    )
    try:
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
    except (TimeoutError, OSError, HTTPClientError):
        return 599, None
    ANSWERS[response.code] += 1
    try:
        data = json.loads(response.body) if response.body else None
    except ValueError:
        data = None
    return response.code, data


# --------------------------------------------------------------------------- the run


@dataclass
class Build:
    tag: str
    owner: str
    server: str
    rate: float
    count: int
    burst: int
    #: The lines the printer reported handing to its stdout (see ``Soak.count_server``).
    counts: dict[str, int]
    id: str = ""
    status: str = ""
    cancel_asked: bool = False
    active_when_killed: bool = False  # on the killed server while it ran

    def printed(self) -> int | None:
        return self.counts.get(self.tag, 0)


@dataclass
class Follow:
    """One client's following of one build, to its end."""

    build: Build
    received: int = 0
    duplicated: int = 0
    gaps: int = 0
    last: int = 0
    complete: bool = False
    connections: int = 0
    error: str = ""


@dataclass
class Soak:
    minutes: float
    builds: int = 20
    owners: int = 4
    clients: int = 10
    max_rate: float = 1000.0
    seed: int = 7
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="agentbuild-soak-")))

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.token = f"soak-{uuid.uuid4().hex[:10]}"
        self.all: list[Build] = []
        self.follows: dict[int, list[Follow]] = {i: [] for i in range(self.clients)}
        self.latencies: list[tuple[float, float]] = []
        self.events: list[str] = []
        self.spawning = True
        #: (start, end) wall-clock times of the faults, for the latency outside them
        self.windows: list[tuple[float, float]] = []
        #: build tag -> lines its printer handed to stdout, reported over loopback
        self.printed: dict[str, int] = {}
        self.count_port = 0
        self.t0 = time.monotonic()

    # -- helpers ---------------------------------------------------------------------------

    def note(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.1f}s] {text}"
        self.events.append(line)
        print(line, file=sys.stderr, flush=True)

    def live(self) -> list[Server]:
        return [s for s in self.servers if s.alive]

    def server(self, name: str) -> Server:
        return next(s for s in self.servers if s.name == name)

    def active(self) -> list[Build]:
        return [b for b in self.all if b.id and b.status not in TERMINAL]

    # -- builds ----------------------------------------------------------------------------

    def _new_build(self, index: int) -> Build:
        seconds = self.minutes * 60
        duration = min(max(self.rng.uniform(0.08, 0.25) * seconds, 4.0), 90.0)
        rate = self.rng.choice([1.0, 10.0, 100.0, self.max_rate])
        burst = self.rng.choice([1, 1, 10, 100]) if rate >= 100 else 1
        tag = f"{self.token}-{index}"
        return Build(
            tag=tag,
            owner=f"owner{index % self.owners}",
            server=self.servers[index % len(self.servers)].name,
            rate=rate,
            count=max(1, int(rate * duration)),
            burst=burst,
            counts=self.printed,
        )

    async def create(self, build: Build) -> bool:
        servers = [self.server(build.server)] + [s for s in self.live() if s.name != build.server]
        for server in servers:
            if not server.alive:
                continue
            spec = {
                "name": build.tag,
                "files": {"printer.py": PRINTER},
                "steps": [
                    "echo start",
                    f"python3 printer.py {build.rate} {build.count} {build.burst} {self.count_port}:{build.tag} "
                    f"{self.token}",
                ],
                "timeout": 600,
            }
            code, data = await call(server, "POST", "builds", spec, owner=build.owner)
            if code == 201:
                build.id, build.status, build.server = data["id"], data["status"], server.name
                return True
        return False

    async def spawner(self) -> None:
        index = 0
        end = self.t0 + self.minutes * 60
        while time.monotonic() < end:
            while len(self.active()) < self.builds and time.monotonic() < end:
                build = self._new_build(index)
                if not await self.create(build):
                    break  # the database or the servers are down: try again shortly
                self.all.append(build)
                index += 1
            await asyncio.sleep(0.5)
        self.spawning = False
        self.note(f"spawning done: {len(self.all)} builds")
        while self.active() or any(
            f.build.status in TERMINAL and not f.complete for f in self._following()
        ):
            await asyncio.sleep(10)
            stuck = [f for f in self._following() if f.build.status in TERMINAL]
            self.note(
                f"waiting: {len(self.active())} builds active, {len(stuck)} finished builds "
                "still followed: "
                + ", ".join(f"{f.build.id}@{f.last} ({f.error})" for f in stuck[:5])
            )

    def _following(self) -> list[Follow]:
        return [
            f for fs in self.follows.values() for f in fs if not f.complete and f.error != "gave up"
        ]

    async def watcher(self) -> None:
        """Statuses, from the list of each owner's active builds (on any live server)."""
        while self.spawning or self.active():
            for owner in {b.owner for b in self.active()}:
                live = self.live()
                if not live:
                    break
                code, data = await call(
                    self.rng.choice(live),
                    "GET",
                    f"builds?status={ACTIVE_FILTER}&limit=500",
                    owner=owner,
                )
                if code != 200:
                    continue
                running = {b["id"]: b["status"] for b in data["builds"]}
                for build in self.active():
                    if build.owner != owner:
                        continue
                    if build.id in running:
                        build.status = running[build.id]
                        continue
                    code, one = await call(
                        self.rng.choice(live), "GET", f"builds/{build.id}", owner=owner
                    )
                    if code == 200:
                        build.status = one["status"]
            await asyncio.sleep(1.0)

    async def canceller(self) -> None:
        mean = max(3.0, self.minutes * 60 / 30)
        while self.spawning:
            await asyncio.sleep(self.rng.expovariate(1 / mean))
            candidates = [b for b in self.active() if not b.cancel_asked]
            live = self.live()
            if not candidates or not live:
                continue
            build = self.rng.choice(candidates)
            build.cancel_asked = True
            via = self.rng.choice(live)
            code, _ = await call(via, "POST", f"builds/{build.id}/cancel", owner=build.owner)
            self.note(f"cancel {build.id} (on {build.server}) via {via.name}: {code}")

    async def faults(self) -> None:
        seconds = self.minutes * 60
        await asyncio.sleep(0.30 * seconds)
        began = time.time()
        down = await asyncio.to_thread(self.pg.restart)
        self.windows.append((began, time.time()))
        self.note(f"PostgreSQL restarted ({down:.1f}s)")
        await asyncio.sleep(max(0.0, self.t0 + 0.55 * seconds - time.monotonic()))
        victim = self.servers[0]
        for build in self.active():
            if build.server == victim.name:
                build.active_when_killed = True
        began = time.time()
        victim.kill9()
        self.note(f"server {victim.name} killed (SIGKILL)")
        await asyncio.sleep(2.0)
        await victim.start()
        self.windows.append((began, time.time()))
        self.note(f"server {victim.name} restarted")

    async def rss(self) -> None:
        while True:
            for server in self.servers:
                server.sample_rss()
            await asyncio.sleep(0.25)

    # -- clients ---------------------------------------------------------------------------

    async def client(self, cid: int) -> None:
        rng = random.Random(self.seed * 100 + cid)
        while True:
            followed = {f.build.tag for f in self.follows[cid]}
            candidates = [b for b in self.active() if b.tag not in followed]
            if not candidates:
                if not self.spawning and not self.active():
                    return
                await asyncio.sleep(0.2)
                continue
            follow = Follow(rng.choice(candidates))
            self.follows[cid].append(follow)
            await self.follow(follow, rng)

    async def follow(self, follow: Follow, rng: random.Random) -> None:
        build = follow.build
        headers = {"Authorization": f"token {TOKEN}", USER_HEADER: build.owner}
        terminal = False
        ended: float | None = None  # when the watcher saw the build end
        while ended is None or time.monotonic() - ended < 60:
            if ended is None and build.status in TERMINAL:
                ended = time.monotonic()
            live = self.live()
            if not live:
                await asyncio.sleep(0.5)
                continue
            server = rng.choice(live)
            url = (
                f"ws://127.0.0.1:{server.port}/agentbuild/api/builds/{build.id}/stream"
                f"?after={follow.last}"
            )
            drop_after = rng.expovariate(1 / 6.0) if rng.random() < 0.7 else math.inf
            try:
                async with websockets.connect(
                    url, additional_headers=headers, max_size=None, open_timeout=10
                ) as ws:
                    follow.connections += 1
                    opened = time.time()
                    until = time.monotonic() + drop_after
                    while True:
                        left = until - time.monotonic()
                        if left <= 0:  # drop: half the time without any closing handshake
                            if rng.random() < 0.5:
                                ws.transport.abort()
                            break
                        try:
                            message = await asyncio.wait_for(ws.recv(), min(left, 120))
                        except TimeoutError:
                            continue
                        now = time.time()
                        terminal = self._take(follow, message, opened, now) or terminal
            except websockets.ConnectionClosedOK:
                if terminal:
                    follow.complete = True
                    return
                follow.error = "closed without the terminal entry"
            except (websockets.WebSocketException, OSError, TimeoutError) as exc:
                if isinstance(exc, websockets.InvalidStatus):
                    ANSWERS[exc.response.status_code] += 1
                follow.error = f"{type(exc).__name__}: {exc}"[:200]
                await asyncio.sleep(rng.uniform(0.1, 0.6))  # server down or restarting
        self.note(f"client gave up following {build.id}: {follow.error}")
        follow.error = "gave up"

    def _take(self, follow: Follow, message: str | bytes, opened: float, now: float) -> bool:
        terminal = False
        for entry in json.loads(message):
            seq = entry["seq"]
            if seq <= follow.last:
                follow.duplicated += 1
                continue
            if seq != follow.last + 1:
                follow.gaps += seq - follow.last - 1
            follow.last = seq
            follow.received += 1
            if entry["kind"] == EntryKind.LOG:
                parts = entry["text"].split(" ")
                if len(parts) == 3 and parts[0] == "soak":
                    printed = float(parts[2])
                    if printed >= opened:
                        self.latencies.append((printed, now - printed))
            elif entry.get("type") == EventType.STATUS and entry["data"].get("status") in TERMINAL:
                terminal = True
        return terminal

    # -- the whole run -----------------------------------------------------------------------

    async def count_server(self) -> asyncio.Server:
        """Where printers report ``<tag> <lines written>`` after each write to stdout."""

        async def reports(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.reporting.add(task)
            try:
                async for line in reader:
                    tag, _, count = line.decode().partition(" ")
                    self.printed[tag] = max(self.printed.get(tag, 0), int(count))
            finally:
                writer.close()
                self.reporting.discard(task)

        self.reporting: set[asyncio.Task[None]] = set()
        server = await asyncio.start_server(reports, "127.0.0.1", 0)
        self.count_port = server.sockets[0].getsockname()[1]
        return server

    async def run(self) -> dict[str, Any]:
        AsyncHTTPClient.configure(None, max_clients=64)
        counter = await self.count_server()
        self.pg = PrivateCluster()
        await asyncio.to_thread(self.pg.start)
        stale = 10.0
        self.servers = [Server(n, self.tmp, self.pg.url, stale) for n in ("A", "B")]
        try:
            await asyncio.gather(*(s.start() for s in self.servers))
            self.note(f"PostgreSQL :{self.pg.port}, servers A :{self.servers[0].port}, "
                      f"B :{self.servers[1].port}")  # fmt: skip
            self.t0 = time.monotonic()
            sampler = asyncio.create_task(self.rss())
            faults = asyncio.create_task(self.faults())
            await asyncio.gather(
                self.spawner(),
                self.watcher(),
                self.canceller(),
                *(self.client(i) for i in range(self.clients)),
            )
            await faults
            self.note("every build ended; every client done")
            orphans_live = self.orphans()
            # every printer has exited: the counter reads what their closed sockets still hold
            if self.reporting:
                await asyncio.wait(set(self.reporting), timeout=30)
            report = await self.verify()
            sampler.cancel()
            for server in self.servers:
                server.sample_rss()
                await server.stop()
            report["orphans"] = orphans_live + self.orphans()
            report["peak_rss"] = {k: v for s in self.servers for k, v in s.peak_rss.items()}
            report["events"] = self.events
            return report
        finally:
            counter.close()
            for server in self.servers:
                if server.proc is not None and server.proc.poll() is None:
                    server.proc.kill()
            self.pg.stop()

    def orphans(self) -> int:
        """Processes of this run's builds still alive (every build has ended)."""
        count = 0
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if self.token in " ".join(proc.info["cmdline"] or []):
                    count += 1
                    self.note(f"orphan: pid {proc.pid} {proc.info['cmdline']}")
        return count

    async def verify(self) -> dict[str, Any]:
        reader = self.live()[-1]
        statuses: Counter[str] = Counter()
        by_status: dict[str, dict[str, int]] = {}
        stored_seq: dict[str, int] = {}
        problems: list[str] = []
        for build in self.all:
            code, one = await call(reader, "GET", f"builds/{build.id}", owner=build.owner)
            assert code == 200, (code, one)
            build.status = one["status"]
            statuses[build.status] += 1
            entries = await self.logs(reader, build)
            seqs = [e["seq"] for e in entries]
            if seqs != list(range(1, len(seqs) + 1)) or one["last_seq"] != len(seqs):
                problems.append(f"{build.id}: stored seq not contiguous 1..{one['last_seq']}")
            stored_seq[build.tag] = len(seqs)
            last = entries[-1] if entries else {}
            if last.get("type") != EventType.STATUS or last["data"].get("status") != build.status:
                problems.append(f"{build.id} ({build.status}): the last stored entry is {last}")
            for follows in self.follows.values():
                for f in follows:
                    if f.build is build and not f.complete:
                        problems.append(
                            f"{build.id} ({build.status}, on {build.server}, {len(seqs)} "
                            f"entries stored): a client stopped at seq {f.last}: {f.error}; "
                            f"stored there: {[e.get('type') or e['kind'] for e in entries[f.last - 2 : f.last + 2]]}"
                        )
            numbers = [
                int(e["text"].split(" ")[1])
                for e in entries
                if e["kind"] == EntryKind.LOG and e["text"].startswith("soak ")
            ]
            if numbers != list(range(len(numbers))):
                problems.append(f"{build.id}: stored lines out of order or with a hole")
            printed = build.printed() or 0
            row = by_status.setdefault(
                build.status, {"builds": 0, "printed": 0, "stored": 0, "lost": 0, "unstored": 0}
            )
            row["builds"] += 1
            row["printed"] += printed
            row["stored"] += len(numbers)
            missing = printed - len(numbers)
            promised = build.status != BuildStatus.INTERRUPTED
            if missing < 0:
                problems.append(f"{build.id}: {len(numbers)} lines stored, {printed} printed")
            elif missing and promised:
                row["lost"] += missing
                problems.append(f"{build.id} ({build.status}): {missing} printed lines not stored")
            elif missing:
                row["unstored"] += missing
            if build.status == BuildStatus.SUCCEEDED and len(numbers) != build.count:
                problems.append(f"{build.id}: succeeded with {len(numbers)}/{build.count} lines")
            if build.status == BuildStatus.INTERRUPTED and not build.active_when_killed:
                problems.append(f"{build.id}: interrupted though its server ({build.server}) lived")
            if build.status == BuildStatus.FAILED:
                problems.append(
                    f"{build.id}: failed on {build.server} (rate {build.rate:g}/s, "
                    f"{printed}/{build.count} lines printed, exit code {one.get('exit_code')}): "
                    f"{str(one.get('error'))[:300]}"
                )
        clients = []
        for cid, follows in self.follows.items():
            done = [f for f in follows if f.complete]
            stored = sum(stored_seq[f.build.tag] for f in done)
            received = sum(f.received for f in done)
            # A follow that never reached the end: what was stored beyond it is lost to it.
            # One whose cursor is at or past the stored end saw entries a killed server
            # never stored; the reaper then stored the build's terminal entry at a seq the
            # client had already seen (with other content), so the client can never
            # receive it: counted apart. Readers see only stored entries, so this stays 0.
            cut = [f for f in follows if not f.complete]
            rewritten = [f for f in cut if f.last >= stored_seq[f.build.tag]]
            cut_short = sum(stored_seq[f.build.tag] - f.last for f in cut if f not in rewritten)
            clients.append(
                {
                    "client": cid,
                    "builds": len(done),
                    "unfinished": len(follows) - len(done),
                    "connections": sum(f.connections for f in follows),
                    "stored": stored,
                    "received": received,
                    "lost": stored - received + cut_short,
                    "crash_rewritten": len(rewritten),
                    "seen_never_stored": sum(
                        f.last - stored_seq[f.build.tag] + 1 for f in rewritten
                    ),
                    "duplicated": sum(f.duplicated for f in follows),
                    "gaps": sum(f.gaps for f in follows),
                }
            )
        lat = sorted(latency for _, latency in self.latencies)
        # outside the faults (and the 5 s after each): the latency of a healthy system
        calm = sorted(
            latency
            for printed, latency in self.latencies
            if not any(start <= printed <= end + 5 for start, end in self.windows)
        )
        return {
            "minutes": self.minutes,
            "builds": len(self.all),
            "statuses": dict(statuses),
            "by_status": by_status,
            "clients": clients,
            "lost": sum(c["lost"] for c in clients) + sum(r["lost"] for r in by_status.values()),
            "duplicated": sum(c["duplicated"] for c in clients),
            "gaps": sum(c["gaps"] for c in clients),
            "crash_rewritten": sum(c["crash_rewritten"] for c in clients),
            "seen_never_stored": sum(c["seen_never_stored"] for c in clients),
            "unfinished_follows": sum(c["unfinished"] for c in clients),
            "latency_p50": statistics.median(lat) if lat else None,
            "latency_p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
            "latency_samples": len(lat),
            "calm_latency_p99": calm[min(len(calm) - 1, int(len(calm) * 0.99))] if calm else None,
            "calm_latency_samples": len(calm),
            "problems": problems,
            "answers": dict(ANSWERS),
            "server_errors": sum(n for code, n in ANSWERS.items() if code >= 500 and code != 503),
        }

    async def logs(self, server: Server, build: Build) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            code, page = await call(
                server,
                "GET",
                f"builds/{build.id}/logs?after={len(out)}&limit=10000",
                owner=build.owner,
            )
            assert code == 200, (code, page)
            out.extend(page["entries"])
            if page["done"] or not page["entries"]:
                return out


def table(report: dict[str, Any]) -> str:
    mib = 1024 * 1024
    lines = [
        f"soak: {report['minutes']:g} min, {report['builds']} builds",
        "",
        "| final status | builds | lines printed | lines stored | lost | unstored at kill -9 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for status, row in sorted(report["by_status"].items()):
        lines.append(
            f"| {status} | {row['builds']} | {row['printed']} | {row['stored']} | "
            f"{row['lost']} | {row['unstored']} |"
        )
    lines += [
        "",
        "| client | builds followed to the end | connections | entries stored | received | lost | duplicated | seq gaps | terminal missed after kill -9 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in report["clients"]:
        lines.append(
            f"| {c['client']} | {c['builds']} | {c['connections']} | {c['stored']} | "
            f"{c['received']} | {c['lost']} | {c['duplicated']} | {c['gaps']} | "
            f"{c['crash_rewritten']} |"
        )
    p50, p99 = report["latency_p50"], report["latency_p99"]
    lines += [
        "",
        "| server | peak RSS |",
        "|---|---:|",
        *(f"| {name} | {rss / mib:.0f} MiB |" for name, rss in report["peak_rss"].items()),
        "",
        f"print-to-client latency: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
        f"({report['latency_samples']} live lines)"
        if p99 is not None
        else "print-to-client latency: no samples",
        f"p99 outside the faults (and 5 s after each): {report['calm_latency_p99'] * 1000:.0f} ms "
        f"({report['calm_latency_samples']} lines)"
        if report["calm_latency_p99"] is not None
        else "",
        f"terminal entry missed after kill -9 (the client had seen seqs the killed server never "
        f"stored; the reaper reused one): {report['crash_rewritten']} follows, "
        f"{report['seen_never_stored']} entries seen but never stored",
        f"lost: {report['lost']}, duplicated: {report['duplicated']}, seq gaps: {report['gaps']}, "
        f"orphan processes: {report['orphans']}",
        "answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(report["answers"].items())),
        "problems: " + ("none" if not report["problems"] else ""),
        *(f"  - {p}" for p in report["problems"]),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--builds", type=int, default=20)
    parser.add_argument("--owners", type=int, default=4)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--max-rate", type=float, default=1000.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the servers' logs and dirs")
    args = parser.parse_args()
    soak = Soak(
        minutes=args.minutes,
        builds=args.builds,
        owners=args.owners,
        clients=args.clients,
        max_rate=args.max_rate,
        seed=args.seed,
    )
    try:
        report = asyncio.run(soak.run())
    finally:
        if args.keep:
            print(f"kept: {soak.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(soak.tmp, ignore_errors=True)
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

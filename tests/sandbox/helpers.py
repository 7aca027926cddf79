"""Shared helpers for the sandbox tests: an output collector, process checks, making
sandboxes of both local providers."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from jupyter_agentbuild.sandbox import LocalSandbox, LocalSandboxProvider
from jupyter_agentbuild.sandbox.isolated_provider import IsolatedLocalProvider

WAIT = 20.0  # upper bound for awaiting an event that must happen (not a sleep)


class Collector:
    """An ``OutputSink`` that records batches, rebuilds whole lines, and wakes waiters.

    ``gate``: when set to a cleared :class:`asyncio.Event`, every call waits on it after
    recording its batch (a paused consumer).
    """

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[str], bool]] = []
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.pieces: dict[str, list[list[str]]] = {"stdout": [], "stderr": []}
        self._partial: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._waiters: list[tuple[Callable[[str, str], bool], asyncio.Event]] = []
        self.gate: asyncio.Event | None = None
        self.calls_in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, stream: str, lines: list[str], continued: bool) -> None:
        assert stream in ("stdout", "stderr")
        assert isinstance(lines, list) and lines, "a batch has at least one line"
        assert all(isinstance(line, str) for line in lines)
        self.calls_in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.calls_in_flight)
        try:
            self.batches.append((stream, list(lines), continued))
            for index, line in enumerate(lines):
                partial = self._partial[stream]
                partial.append(line)
                if continued and index == len(lines) - 1:
                    continue
                self.pieces[stream].append(list(partial))
                whole = "".join(partial)
                partial.clear()
                self.lines[stream].append(whole)
                for predicate, event in self._waiters:
                    if predicate(stream, whole):
                        event.set()
            if self.gate is not None:
                await self.gate.wait()
        finally:
            self.calls_in_flight -= 1

    def when(self, predicate: Callable[[str, str], bool]) -> asyncio.Event:
        """An event set when a whole line matching ``predicate(stream, line)`` arrives."""
        event = asyncio.Event()
        for stream, lines in self.lines.items():
            if any(predicate(stream, line) for line in lines):
                event.set()
        self._waiters.append((predicate, event))
        return event

    async def wait_line(self, text: str, stream: str = "stdout") -> None:
        event = self.when(lambda s, line: s == stream and line == text)
        await asyncio.wait_for(event.wait(), WAIT)

    def value(self, key: str) -> int:
        """The int printed on a stdout line ``"<key> <int>"``."""
        for line in self.lines["stdout"]:
            if line.startswith(key + " "):
                return int(line.split()[1])
        raise AssertionError(f"no line {key!r} in {self.lines['stdout'][:20]}")


def group_members(pgid: int) -> list[int]:
    """Non-zombie processes in process group ``pgid``."""
    found = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                found.append(pid)
        except (OSError, psutil.Error):
            continue
    return found


def is_running(pid: int, create_time: float | None = None) -> bool:
    """Alive and not a zombie (a zombie is dead; its parent may just not have reaped it)."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def create_time(pid: int) -> float:
    return float(psutil.Process(pid).create_time())


async def wait_until(predicate: Callable[[], bool], what: str, seconds: float = WAIT) -> None:
    """Wait for a condition of the outside world (e.g. a process state) to become true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def kill_quietly(pid: int) -> None:
    try:
        psutil.Process(pid).kill()
    except psutil.Error:
        pass


def marked(build_id: str, *argv: str) -> list[int]:
    """Host pids of live processes carrying the build's environment marker: the processes
    of that build, whichever provider ran it. With ``argv``: only those whose command line
    starts with it (``argv[0]`` compared by base name), e.g. ``("sleep", "1000")``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("AGENTBUILD_BUILD_ID") != build_id:
                continue
            if argv:
                cmd = proc.cmdline()
                if len(cmd) < len(argv) or os.path.basename(cmd[0]) != argv[0]:
                    continue
                if cmd[1 : len(argv)] != list(argv[1:]):
                    continue
        except (psutil.Error, OSError):
            continue
        found.append(proc.pid)
    return found


def exists(path: str | os.PathLike[str]) -> bool:
    """A file-system check for an async test (a stat of a local path: never blocks long)."""
    return os.path.exists(path)


def is_dir(path: str | os.PathLike[str]) -> bool:
    return os.path.isdir(path)


PY = shlex.quote(sys.executable)


def isolated_provider(root: Path, **kw: Any) -> IsolatedLocalProvider:
    """The isolated provider, hiding the home dir as the server does (Python bound back)."""
    return IsolatedLocalProvider(workspace_root=str(root), private_paths=(str(Path.home()),), **kw)


def step_gone(sandbox: LocalSandbox, pid: int) -> bool:
    """Nothing left of the step whose shell printed ``pid`` (``$$``)."""
    if sandbox.isolated:
        return marked(sandbox.build_id) == []
    return group_members(pid) == []


def pid_running(sandbox: LocalSandbox, pid: int) -> bool:
    """Is the process a step printed as ``pid`` (``$!``) still running? Isolated: is any
    ``sleep 1000`` of the build (what those tests start in the background)?"""
    if sandbox.isolated:
        return marked(sandbox.build_id, "sleep", "1000") != []
    return is_running(pid)


async def make(provider: LocalSandboxProvider, build_id: str = "b1", **kw: object) -> LocalSandbox:
    kw.setdefault("workspace", None)
    kw.setdefault("files", {})
    kw.setdefault("env", {})
    return await provider.create(build_id, **kw)  # type: ignore[arg-type]

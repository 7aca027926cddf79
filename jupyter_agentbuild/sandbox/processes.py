"""Process groups and psutil: finding, signalling and reaping what a step started.

Covers the live side (a step's group and the descendants that left it) and the dead-server
side (:func:`reap_leftovers`: leftovers found by recorded group, cwd and the build's marker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .base import SandboxError
from .environment import MARKER_ENV
from .paths import inside

log = logging.getLogger(__name__)

#: How long to wait for processes to vanish after SIGKILL before giving up (never hang).
KILL_WAIT = 5.0
POLL_INTERVAL = 0.02


@dataclass
class LiveGroup:
    """One process group we started: a step or the preview process."""

    proc: subprocess.Popen[bytes]
    create_time: float  # the leader's, from psutil (0.0 if it could not be read)
    kind: str  # "step" or "preview"
    escaped: dict[int, float] = field(default_factory=dict)  # pid -> create_time
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)
    gone_event: asyncio.Event = field(default_factory=asyncio.Event)
    exit_task: asyncio.Task[int] | None = None

    @property
    def pgid(self) -> int:
        return self.proc.pid


def start_leader(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
    pass_fds: Sequence[int] = (),
) -> tuple[subprocess.Popen[bytes], float]:
    """Start ``argv`` as the leader of a new session (so of its own process group), output
    on pipes, no stdin; with its create time (0.0 when it is already gone and reaped)."""
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
            pass_fds=tuple(pass_fds),
        )
    except OSError as exc:
        raise SandboxError(f"cannot start the step: {exc.strerror or exc}") from None
    try:
        create_time = psutil.Process(proc.pid).create_time()
    except psutil.Error:  # exited and reaped by someone else already
        create_time = 0.0
    return proc, create_time


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    members = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) != pgid:
                continue
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                continue
        except (OSError, psutil.Error):
            continue
        members.append(pid)
    return members


def is_alive(pid: int, create_time: float) -> bool:
    """Is the process that had ``create_time`` still running (and not a zombie)?"""
    try:
        proc = psutil.Process(pid)
        same: bool = abs(proc.create_time() - create_time) < 0.01
        return same and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def signal_pid(pid: int, create_time: float, sig: int) -> None:
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) < 0.01:
            proc.send_signal(sig)
    except psutil.Error:
        pass


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def escapees(
    pgid: int,
    *,
    build_id: str,
    directory: str,
    since: float,
    exclude_pgids: Iterable[int] = (),
) -> dict[int, float]:
    """Processes that belong to group ``pgid``'s step but are no longer in the group.

    Descendants of the group's live members that are in another group (``setsid``,
    ``setpgid``), and processes created since ``since`` (the leader's psutil create
    time: same clock) that carry this build's :data:`MARKER_ENV` (this catches the
    ``setsid`` children of a leader that already exited).
    """
    excluded = {pgid, *exclude_pgids}
    me = os.getpid()
    children: dict[int, list[int]] = {}
    created: dict[int, float] = {}
    roots: list[int] = []
    others: list[int] = []
    for proc in psutil.process_iter(["ppid", "create_time"]):
        pid = proc.pid
        ppid = proc.info["ppid"]
        ctime = proc.info["create_time"]
        if ppid is None or ctime is None:
            continue
        children.setdefault(ppid, []).append(pid)
        created[pid] = ctime
        with contextlib.suppress(OSError):
            group = os.getpgid(pid)
            if group == pgid:
                roots.append(pid)
            elif group in excluded:
                others.append(pid)
    found: dict[int, float] = {}
    for pid in _descendants(roots, children):
        with contextlib.suppress(OSError):
            if os.getpgid(pid) not in excluded:
                found[pid] = created[pid]
    # the sandbox's other groups (a preview process, a concurrent step) and their offspring
    protected = set(others) | _descendants(others, children)
    for pid, ctime in created.items():
        if ctime < since - 0.05 or pid in found or pid in protected or pid == me:
            continue
        try:
            proc = psutil.Process(pid)
            if not _marked(proc, build_id, directory) or os.getpgid(pid) in excluded:
                continue
        except (OSError, psutil.Error):
            continue
        found[pid] = ctime
    return found


def _marked(proc: psutil.Process, build_id: str, directory: str) -> bool:
    """Does ``proc`` carry this sandbox's marker: the build id in its environment, and
    ``HOME`` = the sandbox dir or a cwd inside it (two servers could share an id)?"""
    try:
        env = proc.environ()
        if env.get(MARKER_ENV) != build_id:
            return False
    except (OSError, psutil.Error):
        return False
    return env.get("HOME") == directory or _cwd_inside(proc, directory)


def _cwd_inside(proc: psutil.Process, directory: str) -> bool:
    try:
        return inside(os.path.normpath(proc.cwd()), directory)
    except (OSError, psutil.Error):
        return False


def _descendants(roots: Iterable[int], children: Mapping[int, list[int]]) -> set[int]:
    found: set[int] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def reap_leftovers(sandbox_id: str, state: dict[str, Any]) -> None:
    if state.get("host") != socket.gethostname():
        return
    directory = state.get("dir")
    if not isinstance(directory, str) or not os.path.isabs(directory):
        return
    directory = os.path.normpath(directory)
    build_id = state.get("build_id")
    if not isinstance(build_id, str):
        build_id = sandbox_id.removeprefix("local-")
    me = os.getpid()
    victims: dict[int, psutil.Process] = {}
    pids = psutil.pids()
    recorded = state.get("pgids")
    for item in recorded if isinstance(recorded, list) else ():
        try:
            pgid, ctime = int(item[0]), float(item[1])
        except (TypeError, ValueError, IndexError):
            continue
        if pgid <= 1:
            continue
        trusted = is_alive(pgid, ctime)
        for pid in pids:
            try:
                if pid == me or os.getpgid(pid) != pgid:
                    continue
                proc = psutil.Process(pid)
            except (OSError, psutil.Error):
                continue
            if trusted or _cwd_inside(proc, directory):
                victims[pid] = proc
    for proc in psutil.process_iter():
        if proc.pid != me and proc.pid not in victims and _marked(proc, build_id, directory):
            victims[proc.pid] = proc
    for proc in victims.values():
        with contextlib.suppress(psutil.Error):
            proc.kill()  # psutil checks the create time: a reused pid is not hit
    deadline = time.monotonic() + KILL_WAIT
    alive = list(victims.values())
    while alive:
        # zombies count as dead: their parent (maybe gone too) has yet to reap them
        alive = [p for p in alive if p.is_running() and _status(p) != psutil.STATUS_ZOMBIE]
        if alive and time.monotonic() > deadline:
            log.warning("sandbox %s: %d process(es) survived SIGKILL", sandbox_id, len(alive))
            return
        if alive:
            time.sleep(POLL_INTERVAL)


def _status(proc: psutil.Process) -> str | None:
    try:
        status: str = proc.status()
        return status
    except psutil.Error:
        return None

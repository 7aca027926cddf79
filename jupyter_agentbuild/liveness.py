"""Is the server that took a build (or runs its preview) dead?

Servers sharing a database record who runs what (``runner_host``, ``runner_pid``) and
check in (``heartbeat_at``). Another server may take over, or clean up, only what a dead
one left: a wrong "dead" kills a live build's processes, a wrong "alive" leaves work
nobody will ever finish. One answer for every caller, so they never disagree.
"""

from __future__ import annotations

import os
import socket

import psutil

#: This host's name, as servers record it.
HOST = socket.gethostname()


def server_dead(
    *,
    host: str | None,
    pid: int | None,
    last_seen: float | None,
    stale_after: float,
    now: float,
    taken_at: float | None = None,
) -> bool:
    """On this host, the recorded ``pid`` answers: gone (or this very process, which
    cannot be a server that recorded it before it started) means dead. With ``taken_at``
    (when it took the work, a POSIX time), a live pid counts only if its process is older
    than that (otherwise the pid was reused: the heartbeat decides). Elsewhere, or when
    the pid cannot tell, the server is dead once ``last_seen`` (its last heartbeat, a
    POSIX time; None: never) is more than ``stale_after`` seconds before ``now``."""
    if host == HOST and pid is not None:
        if pid == os.getpid() or not pid_alive(pid):
            return True
        if taken_at is None or started_before(pid, taken_at):
            return False
    if last_seen is None:
        return True
    return now - last_seen > stale_after


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (any owner)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        pass
    return True


def started_before(pid: int, when: float) -> bool:
    """Did the process ``pid`` start before ``when`` (a POSIX time)? False if unknown."""
    try:
        return bool(psutil.Process(pid).create_time() <= when)
    except psutil.Error:
        return False


__all__ = ["HOST", "pid_alive", "server_dead", "started_before"]

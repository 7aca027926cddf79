"""``server_dead``: the one answer to "is the server that took this work dead?", used by
the runner (interrupted builds) and by previews (orphans, leftovers)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from jupyter_agentbuild.liveness import HOST, server_dead


def test_on_this_host_the_pid_answers() -> None:
    now = time.time()
    parent = os.getppid()  # alive, and older than now
    assert not server_dead(host=HOST, pid=parent, last_seen=None, stale_after=1, now=now)
    # this very process cannot be a server that recorded the work before it started
    assert server_dead(host=HOST, pid=os.getpid(), last_seen=now, stale_after=60, now=now)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not psutil.pid_exists(proc.pid)
    assert server_dead(host=HOST, pid=proc.pid, last_seen=now, stale_after=60, now=now)


def test_a_live_pid_younger_than_the_work_is_judged_by_its_heartbeat() -> None:
    now = time.time()
    me_started = psutil.Process(os.getppid()).create_time()
    before = me_started - 100  # the work was taken before this process existed: pid reused
    fresh = dict(host=HOST, pid=os.getppid(), stale_after=30, now=now, taken_at=before)
    assert not server_dead(last_seen=now - 1, **fresh)  # type: ignore[arg-type]
    assert server_dead(last_seen=now - 31, **fresh)  # type: ignore[arg-type]
    assert not server_dead(
        host=HOST, pid=os.getppid(), last_seen=None, stale_after=30, now=now, taken_at=now
    )


def test_elsewhere_only_the_heartbeat_counts() -> None:
    now = time.time()
    other = "elsewhere.invalid"
    assert not server_dead(host=other, pid=os.getpid(), last_seen=now - 5, stale_after=30, now=now)
    assert server_dead(host=other, pid=os.getppid(), last_seen=now - 31, stale_after=30, now=now)
    assert server_dead(host=other, pid=None, last_seen=None, stale_after=30, now=now)

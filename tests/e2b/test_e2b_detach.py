"""A graceful stop of the server (SIGTERM: a normal restart) leaves an E2B build running
in its VM for the next server: real Jupyter server processes, the fake E2B control plane
and the fake envd."""

from __future__ import annotations

import signal
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.server.test_lifecycle import ServerProcess

from .conftest import KEY, marked
from .fake_api import FakeE2BApi
from .fake_envd import FakeEnvd
from .test_e2b_restart import wait_for_end

LINES = 400
SECRET = "s3cr3t-value-for-detach"


def stored_row(tmp_path: Path, build_id: str) -> dict[str, Any]:
    """The build's row as the stopped server left it (no server runs to ask)."""
    with sqlite3.connect(tmp_path / "ab.db") as db:
        db.row_factory = sqlite3.Row
        row = db.execute(
            "SELECT status, runner_id, runner_host, runner_pid FROM builds WHERE id = ?",
            (build_id,),
        ).fetchone()
    return dict(row)


def stop_gracefully(server: ServerProcess) -> None:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=90) is not None


def start_detached_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, timeout: int
) -> tuple[dict[str, Any], str]:
    """A server runs a two-step build until the first step has printed a bit, then is
    stopped with SIGTERM while the step waits for ``/tmp/go`` in the VM."""
    monkeypatch.setenv("AGENTBUILD_PROVIDER", "e2b")
    monkeypatch.setenv("E2B_API_KEY", KEY)
    first = ServerProcess(tmp_path)
    first.start()
    step = (
        "echo run >> /tmp/runs; "
        f"for i in $(seq 1 {LINES}); do echo line-$i; echo err-$i >&2; sleep 0.005; done; "
        "until [ -e /tmp/go ]; do sleep 0.05; done; "
        'echo "token=$TOKEN"'
    )
    build = first.call(
        "POST",
        "builds",
        {
            "steps": [step, 'echo "after $TOKEN"'],
            "env": {"TOKEN": {"value": SECRET, "secret": True}},
            "timeout": timeout,
        },
    )
    first.wait_for_text(build["id"], "line-20")
    stop_gracefully(first)
    return build, step


def test_a_graceful_stop_leaves_the_build_to_the_next_server(
    tmp_path: Path, fake_cloud: tuple[FakeE2BApi, FakeEnvd], monkeypatch: pytest.MonkeyPatch
) -> None:
    plane, envd = fake_cloud
    build, _ = start_detached_build(tmp_path, monkeypatch, timeout=300)
    (vm,) = plane.vms.values()
    assert vm.state == "running", vm.killed_by  # the stop did not kill the VM
    # left running, with no runner: the next server takes it over without waiting
    assert stored_row(tmp_path, build["id"]) == {
        "status": "running",
        "runner_id": None,
        "runner_host": None,
        "runner_pid": None,
    }
    assert marked(build["id"]), "the step no longer runs in the VM"

    second = ServerProcess(tmp_path)
    second.start()
    try:
        second.wait_for_text(build["id"], f"err-{LINES}")
        second.wait_for_text(build["id"], f"line-{LINES}")
        runs = (envd.root / "tmp" / "runs").read_text()  # the VM's files go with it
        (envd.root / "tmp" / "go").touch()
        final = wait_for_end(second, build["id"])
        entries = second.logs(build["id"])
    finally:
        second.stop()
    assert final["status"] == "succeeded", final
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    logs = [(e["step"], e["stream"], e["text"]) for e in entries if e["kind"] == "log"]
    assert [entry for entry in logs if entry[:2] == (0, "stdout")] == [
        *[(0, "stdout", f"line-{i}") for i in range(1, LINES + 1)],
        (0, "stdout", "token=***"),
    ]
    assert [entry for entry in logs if entry[:2] == (0, "stderr")] == [
        (0, "stderr", f"err-{i}") for i in range(1, LINES + 1)
    ]
    assert [entry for entry in logs if entry[0] == 1] == [(1, "stdout", "after ***")]
    events = [e.get("type") for e in entries if e["kind"] == "event"]
    assert events.count("step_started") == 2 and events.count("step_finished") == 2
    statuses = [e["data"]["status"] for e in entries if e.get("type") == "status"]
    assert statuses == ["queued", "starting", "running", "succeeded"]
    assert SECRET not in str(entries)
    assert runs == "run\n"  # the step was followed, not run again
    assert vm.state == "killed" and vm.killed_by != "timeout"  # the build's end killed it
    assert marked(build["id"]) == []


def test_a_detached_vm_is_bounded_by_the_builds_remaining_time(
    tmp_path: Path, fake_cloud: tuple[FakeE2BApi, FakeEnvd], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No server comes back: E2B's timeout ends the VM no later than the build's own
    deadline (not the provider's hour-long lifetime each step asks for)."""
    plane, _ = fake_cloud
    plane.manual_clock = True  # the VM's time passes only when the test says so
    began = time.monotonic()
    build, _ = start_detached_build(tmp_path, monkeypatch, timeout=120)
    (vm,) = plane.vms.values()
    assert vm.state == "running"
    assert vm.timeouts[0] == 3600  # the provider's usual lifetime, at create
    lifetime = vm.timeouts[-1]
    assert 120 - (time.monotonic() - began) - 1 <= lifetime <= 120
    assert marked(build["id"])
    # the fake's clock is real time plus what the test adds: no time added so far
    left = (vm.end_at - datetime.now(UTC)).total_seconds()
    assert left <= lifetime
    plane.advance(left - 2)
    assert vm.state == "running"
    plane.advance(4)
    assert (vm.state, vm.killed_by) == ("killed", "timeout")
    deadline = time.monotonic() + 30
    while marked(build["id"]):  # the fake kills the VM's processes: wait for them to go
        assert time.monotonic() < deadline, "the VM's processes outlived it"
        time.sleep(0.05)
    assert stored_row(tmp_path, build["id"])["status"] == "running"  # until a server looks


def test_a_server_on_another_host_takes_a_detached_build_over_at_once(
    tmp_path: Path, fake_cloud: tuple[FakeE2BApi, FakeEnvd], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first server runs under another host name (its own UTS namespace), so the
    second, already running, cannot see its pid die: only the detached row tells it the
    build needs a server, long before ``stale_after`` (ten minutes here)."""
    plane, envd = fake_cloud
    monkeypatch.setenv("AGENTBUILD_PROVIDER", "e2b")
    monkeypatch.setenv("E2B_API_KEY", KEY)
    patience = ("--AgentBuild.stale_after=600",)
    elsewhere = tmp_path / "python-elsewhere"
    elsewhere.write_text(
        "#!/bin/sh\n"
        f'exec unshare --uts sh -c \'hostname elsewhere && exec "$0" "$@"\' {sys.executable} "$@"\n'
    )
    elsewhere.chmod(0o755)
    first = ServerProcess(tmp_path, extra_args=patience)
    with monkeypatch.context() as patch:
        patch.setattr(sys, "executable", str(elsewhere))
        first.start()
    second = ServerProcess(tmp_path, extra_args=patience)
    second.start()
    try:
        build = first.call(
            "POST", "builds", {"steps": ["echo one; until [ -e /tmp/go ]; do sleep 0.05; done"]}
        )
        first.wait_for_text(build["id"], "one")
        assert stored_row(tmp_path, build["id"])["runner_host"] == "elsewhere"
        stop_gracefully(first)
        deadline = time.monotonic() + 60
        while stored_row(tmp_path, build["id"])["runner_pid"] != second.proc.pid:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the running server did not take the build"
            time.sleep(0.1)  # polling the database another process writes
        (envd.root / "tmp" / "go").touch()
        final = wait_for_end(second, build["id"])
        entries = second.logs(build["id"])
    finally:
        second.stop()
        first.stop()
    assert final["status"] == "succeeded", final
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert [e["text"] for e in entries if e["kind"] == "log"] == ["one"]
    (vm,) = plane.vms.values()
    assert vm.state == "killed" and vm.killed_by != "timeout"

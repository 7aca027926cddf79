"""A server restart does not kill an E2B build: real Jupyter server processes (the first
one killed with SIGKILL mid-step), the fake E2B control plane and the fake envd."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.server.test_lifecycle import ServerProcess

from .conftest import KEY, marked
from .fake_api import FakeE2BApi
from .fake_envd import FakeEnvd

LINES = 400


def wait_for_end(server: ServerProcess, build_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        build: dict[str, Any] = server.call("GET", f"builds/{build_id}")
        if build["status"] not in ("queued", "starting", "running"):
            return build
        time.sleep(0.1)  # polling another process's public API: no event to await
    raise AssertionError(f"build {build_id} did not end")


SECRET = "s3cr3t-value-for-resume"


@pytest.mark.parametrize("case", ["step-still-running", "step-ended-while-down"])
def test_a_restart_mid_build_loses_nothing(
    tmp_path: Path,
    fake_cloud: tuple[FakeE2BApi, FakeEnvd],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    """SIGKILL of the server mid-step; lines go on being printed while no server listens
    (envd drops them: nobody follows the command). The next server resumes the build:
    either the step still runs (it waits for a file the test makes only once the new
    server has caught up, so the rest arrives live) or it ended meanwhile."""
    plane, envd = fake_cloud
    monkeypatch.setenv("AGENTBUILD_PROVIDER", "e2b")
    monkeypatch.setenv("E2B_API_KEY", KEY)
    gate = case == "step-still-running"
    first = ServerProcess(tmp_path)
    first.start()
    step = (
        f"for i in $(seq 1 {LINES}); do echo line-$i; echo err-$i >&2; sleep 0.005; done; "
        + ("until [ -e /tmp/go ]; do sleep 0.05; done; " if gate else "")
        + 'echo "token=$TOKEN"'
    )
    build = first.call(
        "POST",
        "builds",
        {
            "steps": [step, 'echo "after $TOKEN"'],
            "env": {"TOKEN": {"value": SECRET, "secret": True}},
            "timeout": 300,
        },
    )
    first.wait_for_text(build["id"], "line-20")
    assert first.proc is not None
    first.proc.kill()  # SIGKILL: nothing is flushed or stopped
    first.proc.wait()
    (vm,) = plane.vms.values()
    assert vm.state == "running"
    copy = envd.root / "home" / "user" / ".agentbuild" / "runs" / f"{build['id']}.0" / "out"
    if not gate:  # the step's shell exits while no server listens
        deadline = time.monotonic() + 60
        while b"\x1eagentbuild-end" not in copy.read_bytes():
            assert time.monotonic() < deadline, "the step did not end"
            time.sleep(0.05)  # polling a file another process writes

    second = ServerProcess(tmp_path)
    second.start()
    try:
        if gate:
            second.wait_for_text(build["id"], f"err-{LINES}")
            second.wait_for_text(build["id"], f"line-{LINES}")
            (envd.root / "tmp" / "go").touch()
        final = wait_for_end(second, build["id"])
        entries = second.logs(build["id"])
    finally:
        second.stop()
    assert final["status"] == "succeeded", final
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    logs = [(e["step"], e["stream"], e["text"]) for e in entries if e["kind"] == "log"]
    expected_out = [(0, "stdout", f"line-{i}") for i in range(1, LINES + 1)]
    expected_err = [(0, "stderr", f"err-{i}") for i in range(1, LINES + 1)]
    assert [entry for entry in logs if entry[:2] == (0, "stdout")] == [
        *expected_out,
        (0, "stdout", "token=***"),
    ]
    assert [entry for entry in logs if entry[:2] == (0, "stderr")] == expected_err
    assert [entry for entry in logs if entry[0] == 1] == [(1, "stdout", "after ***")]
    events = [e.get("type") for e in entries if e["kind"] == "event"]
    assert events.count("step_started") == 2 and events.count("step_finished") == 2
    assert SECRET not in str(entries)
    assert vm.state == "killed"  # the build's end killed the VM
    assert marked(build["id"]) == []


def test_a_dead_servers_build_whose_vm_is_gone_is_interrupted(
    tmp_path: Path, fake_cloud: tuple[FakeE2BApi, FakeEnvd], monkeypatch: pytest.MonkeyPatch
) -> None:
    plane, _ = fake_cloud
    monkeypatch.setenv("AGENTBUILD_PROVIDER", "e2b")
    monkeypatch.setenv("E2B_API_KEY", KEY)
    first = ServerProcess(tmp_path)
    first.start()
    build = first.call("POST", "builds", {"steps": ["echo started; sleep 300"]})
    first.wait_for_text(build["id"], "started")
    assert first.proc is not None
    first.proc.kill()
    first.proc.wait()
    (vm,) = plane.vms.values()
    plane.kill(vm.sandbox_id, "test")  # E2B lost it (its timeout, say)
    second = ServerProcess(tmp_path)
    second.start()
    try:
        final = wait_for_end(second, build["id"])
    finally:
        second.stop()
    assert final["status"] == "interrupted", final
    assert marked(build["id"]) == []


async def test_the_build_env_kept_in_the_vm_is_roots_only(fake_envd: FakeEnvd) -> None:
    """What a resuming server reads back (secrets are never in the store) is not readable
    by the steps' user."""
    from jupyter_agentbuild.sandbox.e2b import E2BSandboxProvider

    provider = E2BSandboxProvider(api_key=KEY, kill_grace=1.0)
    sandbox = await provider.create("b-env", workspace=None, files={}, env={"S": "x1"})
    seen: list[str] = []

    async def sink(stream: str, lines: list[str], continued: bool) -> None:
        seen.extend(f"{stream}:{line}" for line in lines)

    try:
        await sandbox.run_step(
            "stat -c '%U %a' ~/.agentbuild-env.json; cat ~/.agentbuild-env.json || true",
            step=0,
            timeout=20,
            on_output=sink,
        )
        await sandbox.load_env()
        assert sandbox.build_env == {"CI": "true", "S": "x1"}
    finally:
        await sandbox.destroy()
    assert seen[0] == "stdout:root 600"
    assert not any("x1" in line for line in seen)

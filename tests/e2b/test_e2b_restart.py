"""A server restart does not kill an E2B build: real Jupyter server processes (the first
one killed with SIGKILL mid-step), the fake E2B control plane and the fake envd."""

from __future__ import annotations

import asyncio
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


@pytest.mark.parametrize("secret", ["s3cr3t-value-for-resume"])
def test_a_restart_mid_build_loses_nothing(
    tmp_path: Path,
    fake_cloud: tuple[FakeE2BApi, FakeEnvd],
    monkeypatch: pytest.MonkeyPatch,
    secret: str,
) -> None:
    plane, _ = fake_cloud
    monkeypatch.setenv("AGENTBUILD_PROVIDER", "e2b")
    monkeypatch.setenv("E2B_API_KEY", KEY)
    first = ServerProcess(tmp_path)
    first.start()
    step = (
        f"for i in $(seq 1 {LINES}); do echo line-$i; echo err-$i >&2; sleep 0.02; done; "
        'echo "token=$TOKEN"'
    )
    build = first.call(
        "POST",
        "builds",
        {
            "steps": [step, 'echo "after $TOKEN"'],
            "env": {"TOKEN": {"value": secret, "secret": True}},
            "timeout": 300,
        },
    )
    first.wait_for_text(build["id"], "line-20")
    assert first.proc is not None
    first.proc.kill()  # SIGKILL: nothing is flushed or stopped
    first.proc.wait()
    (vm,) = plane.vms.values()
    assert vm.state == "running"

    second = ServerProcess(tmp_path)
    second.start()
    try:
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
    assert secret not in str(entries)
    assert vm.state == "killed"  # the build's end killed the VM
    assert marked(build["id"]) == []


def test_the_build_env_kept_in_the_vm_is_roots_only(fake_envd: FakeEnvd) -> None:
    """What a resuming server reads back (secrets are never in the store) is not readable
    by the steps' user."""
    from jupyter_agentbuild.sandbox.e2b import E2BSandboxProvider

    async def main() -> list[str]:
        provider = E2BSandboxProvider(KEY, kill_grace=1.0)
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
        return seen

    seen = asyncio.run(main())
    assert seen[0] == "stdout:root 600"
    assert not any("x1" in line for line in seen)

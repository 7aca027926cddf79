"""The E2B provider outside debug mode: the SDK's real calls to the (fake) E2B API for
create, connect, kill, set_timeout and list, then to the fake envd with each VM's token."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jupyter_agentbuild.sandbox.e2b import E2BSandboxProvider
from tests.conftest import Api, read_until, texts

from .conftest import KEY, marked
from .fake_api import FakeE2BApi
from .fake_envd import FakeEnvd

Cloud = tuple[FakeE2BApi, FakeEnvd]


@pytest.fixture
def agentbuild_config(agentbuild_config: dict[str, Any]) -> dict[str, Any]:
    return {**agentbuild_config, "e2b_template": "agentbuild-node", "e2b_sandbox_timeout": 5}


@pytest.fixture
def cloud_api(fake_cloud: Cloud, api: Api) -> Api:
    """The server, started once the fakes are up (the SDK reads their URLs per call). The
    VMs' 5 s lifetime passes only when a test moves their clock (never by the load)."""
    fake_cloud[0].manual_clock = True
    return api


async def test_a_build_creates_and_kills_its_vm_through_the_api(
    cloud_api: Api, fake_cloud: Cloud
) -> None:
    plane, _ = fake_cloud
    build = await cloud_api.create(
        {"steps": ['echo "ci=$CI"; echo "$TOKEN"'], "env": {"TOKEN": "per-command"}}
    )
    entries, _ = await cloud_api.stream(build["id"])
    final = await cloud_api.get(build["id"])
    assert final["status"] == "succeeded", final
    assert texts(entries) == ["ci=true", "per-command"]
    (vm,) = plane.vms.values()
    assert final["sandbox_id"] == f"e2b-{vm.sandbox_id}"
    assert vm.template == "agentbuild-node"
    assert vm.metadata == {"agentbuild_build": build["id"]}
    assert vm.env_vars == {"CI": "true"}  # the build's own env goes per command only
    assert vm.timeouts[0] == 5
    assert vm.network == {"allowPublicTraffic": False}
    # the build's end killed the VM, through the API
    assert (vm.state, vm.killed_by) == ("killed", "api")
    assert ("DELETE", f"/sandboxes/{vm.sandbox_id}") in plane.calls


async def test_each_step_extends_the_vms_lifetime(cloud_api: Api, fake_cloud: Cloud) -> None:
    """E2B's own timeout (5 s here) is a last resort, not a limit on a long build: each
    step gives the VM its full lifetime again. The VMs' clock is moved by hand (4 s while
    each step runs): 8 s in all, past 5 s, and the VM lives on; without the extension it
    would be killed at the second move."""
    plane, envd = fake_cloud
    build = await cloud_api.create(
        {
            "steps": [
                "echo one; until [ -e /tmp/1 ]; do sleep 0.02; done",
                "echo two; until [ -e /tmp/2 ]; do sleep 0.02; done",
            ]
        }
    )
    ws = await cloud_api.ws_fetch("agentbuild", "api", "builds", build["id"], "stream")
    for step, started in (("1", "one"), ("2", "two")):

        def running(seen: list[dict[str, Any]], line: str = started) -> bool:
            return line in texts(seen)

        await read_until(ws, running)
        await asyncio.to_thread(plane.advance, 4)
        (envd.root / "tmp" / step).touch()
    while await ws.read_message() is not None:
        pass
    final = await cloud_api.get(build["id"])
    assert final["status"] == "succeeded", final
    (vm,) = plane.vms.values()
    assert vm.timeouts == [5, 5, 5] and vm.killed_by == "api"


async def test_another_server_kills_the_vm_by_id(cloud_api: Api, fake_cloud: Cloud) -> None:
    """What a successor server does for a dead build's VM: kill it by id through the API,
    from any host (a new provider: nothing shared with the server running the build)."""
    plane, _ = fake_cloud
    build = await cloud_api.create({"steps": ["echo started; sleep 300"]})
    ws = await cloud_api.ws_fetch("agentbuild", "api", "builds", build["id"], "stream")
    await read_until(ws, lambda seen: "started" in texts(seen))
    (vm,) = plane.vms.values()
    other = E2BSandboxProvider(api_key=KEY, sandbox_timeout=5)
    assert await other.reap(f"e2b-{vm.sandbox_id}", {"sandbox_id": vm.sandbox_id}) is True
    assert (vm.state, vm.killed_by) == ("killed", "api")
    while await ws.read_message() is not None:
        pass
    final = await cloud_api.get(build["id"])
    assert final["status"] == "failed", final
    assert marked(build["id"]) == []


async def test_vms_are_found_by_their_builds_metadata(fake_cloud: Cloud) -> None:
    """A server that died between creating a VM and recording its id: a successor finds
    the VM by the build's metadata and kills it."""
    plane, _ = fake_cloud
    provider = E2BSandboxProvider(api_key=KEY, sandbox_timeout=60)
    sandbox = await provider.create("build-a", workspace=None, files={"x": "1"}, env={})
    await sandbox.run_step("true", step=0, timeout=10, on_output=discard_output)
    successor = E2BSandboxProvider(api_key=KEY)
    vm_id = sandbox.state()["sandbox_id"]
    assert await successor.find("build-a") == [vm_id]
    assert await successor.find("build-b") == []
    assert await successor.reap_build("build-a") == 1
    assert plane.vms[vm_id].state == "killed"
    assert await successor.find("build-a") == []
    calls = [path for method, path in plane.calls if method == "GET"]
    assert calls and all(path == "/v2/sandboxes" for path in calls)


async def test_a_wrong_key_is_an_error_without_the_key(fake_cloud: Cloud) -> None:
    provider = E2BSandboxProvider(api_key="e2b_" + "wrongKey0123456789abcdefghijklmnopqrs")
    with pytest.raises(Exception) as info:
        await provider.create("build-c", workspace=None, files={}, env={})
    assert "wrongKey" not in str(info.value)


async def discard_output(stream: str, lines: list[str], continued: bool) -> None:
    return None

"""The fake envd fixture: the real E2B SDK in debug mode, pointed at a local fake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import Api

from .fake_api import FakeE2BApi
from .fake_envd import FakeEnvd

#: Shaped like a real key (``auto`` would pick E2B with it); the debug SDK never sends it.
KEY = "e2b_" + "k3Y9fQ2xLm8RtV7wZp4NcB6hJd1sGa5uEy0TiOq"


@pytest.fixture
def agentbuild_config(agentbuild_config: dict[str, Any]) -> dict[str, Any]:
    return {**agentbuild_config, "provider": "e2b", "e2b_api_key": KEY, "kill_grace": 1.0}


@pytest.fixture
def e2b_api(fake_envd: FakeEnvd, api: Api) -> Api:
    """The server, started once the fake envd is up (the SDK reads its URL at create)."""
    return api


def marked(marker_prefix: str) -> list[psutil.Process]:
    """Processes whose environment carries a step marker of this build."""
    found = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("AGENTBUILD_STEP", "").startswith(marker_prefix):
            found.append(proc)
    return found


@pytest.fixture
def fake_envd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEnvd]:
    """A started fake envd whose sandbox root is ``tmp_path/sandbox``.

    The environment makes a bare ``AsyncSandbox.create()`` use it too (code under test need not
    know): ``E2B_DEBUG`` skips the E2B API (sandbox id ``debug_sandbox_id``) and
    ``E2B_SANDBOX_URL`` replaces the ``http://localhost:49983`` debug envd URL.
    """
    envd = FakeEnvd(tmp_path / "sandbox")
    envd.start()
    monkeypatch.setenv("E2B_DEBUG", "true")
    monkeypatch.setenv("E2B_SANDBOX_URL", envd.url)
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    try:
        yield envd
    finally:
        envd.stop()


@pytest.fixture
def fake_cloud(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FakeE2BApi, FakeEnvd]]:
    """E2B outside debug mode: the fake control plane (create, connect, kill, timeouts,
    list) in front of the fake envd. ``E2B_API_URL`` and ``E2B_SANDBOX_URL`` point the
    SDK at them; the key is checked on every API call, each VM's token on every envd one."""
    envd = FakeEnvd(tmp_path / "vm")
    envd.start()
    api = FakeE2BApi(envd, KEY)
    api.start()
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    monkeypatch.setenv("E2B_API_URL", api.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", envd.url)
    try:
        yield api, envd
    finally:
        api.stop()
        envd.stop()

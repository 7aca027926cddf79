"""E2B fixtures: the real SDK pointed at the fake envd (debug mode) or at the fake E2B
control plane in front of it, and at a real envd when one is named."""

from __future__ import annotations

import os
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


REAL_ENVD = os.environ.get("AGENTBUILD_TEST_ENVD_URL", "")


def _need_root() -> None:
    """The fake envd makes a mount namespace and setuids (as envd does): root only. A
    developer's unprivileged run skips its tests; CI (as root) never does."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the fake envd needs root (mount namespace, setuid)")
        pytest.skip("the fake envd needs root (mount namespace, setuid)")


def _debug_mode(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Make a bare ``AsyncSandbox.create()`` use the envd at ``url`` (code under test need
    not know): ``E2B_DEBUG`` skips the E2B API (sandbox id ``debug_sandbox_id``) and
    ``E2B_SANDBOX_URL`` replaces the ``http://localhost:49983`` debug envd URL."""
    monkeypatch.setenv("E2B_DEBUG", "true")
    monkeypatch.setenv("E2B_SANDBOX_URL", url)
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    monkeypatch.delenv("E2B_API_URL", raising=False)


@pytest.fixture
def fake_envd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEnvd]:
    """A started fake envd whose VM directories are under ``tmp_path/sandbox``."""
    _need_root()
    envd = FakeEnvd(tmp_path / "sandbox")
    envd.start()
    _debug_mode(monkeypatch, envd.url)
    try:
        yield envd
    finally:
        envd.stop()


@pytest.fixture(params=["fake-envd", "real-envd"])
def envd_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The envd a test's builds run against: the fake, and a real one when
    ``AGENTBUILD_TEST_ENVD_URL`` names it (skipped otherwise)."""
    if request.param == "real-envd":
        if not REAL_ENVD:
            pytest.skip("AGENTBUILD_TEST_ENVD_URL does not name a real envd")
        _debug_mode(monkeypatch, REAL_ENVD)
        yield REAL_ENVD
        return
    _need_root()
    envd = FakeEnvd(tmp_path / "sandbox")
    envd.start()
    _debug_mode(monkeypatch, envd.url)
    try:
        yield envd.url
    finally:
        envd.stop()


@pytest.fixture
def agentbuild_config(agentbuild_config: dict[str, Any]) -> dict[str, Any]:
    return {**agentbuild_config, "provider": "e2b", "e2b_api_key": KEY, "kill_grace": 1.0}


@pytest.fixture
def e2b_api(envd_url: str, api: Api) -> Api:
    """The server, started once its envd is up (the SDK reads its URL at create): the
    fake, and a real one with ``AGENTBUILD_TEST_ENVD_URL``."""
    return api


@pytest.fixture
def fake_e2b_api(fake_envd: FakeEnvd, api: Api) -> Api:
    """The server in front of the fake envd only (for tests that look inside it)."""
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
def fake_cloud(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FakeE2BApi, FakeEnvd]]:
    """E2B outside debug mode: the fake control plane (create, connect, kill, timeouts,
    list) in front of the fake envd. ``E2B_API_URL`` and ``E2B_SANDBOX_URL`` point the
    SDK at them; the key is checked on every API call, each VM's token on every envd one."""
    _need_root()
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

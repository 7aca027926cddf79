"""The fake envd fixture: the real E2B SDK in debug mode, pointed at a local fake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .fake_envd import FakeEnvd


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

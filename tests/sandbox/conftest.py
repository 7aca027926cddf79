"""The ``provider`` fixture: each local sandbox test runs against both local providers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from jupyter_agentbuild.sandbox import LocalSandboxProvider

from .helpers import isolated_provider


@pytest.fixture(params=["process", "isolated"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def provider(tmp_path: Path, kind: str) -> LocalSandboxProvider:
    # 1 MiB lines: the split tests count pieces of multi-megabyte lines
    settings: dict[str, Any] = {"kill_grace": 1.0, "max_line_bytes": 1_048_576}
    if kind == "process":
        return LocalSandboxProvider(workspace_root=str(tmp_path / "sandboxes"), **settings)
    isolated = isolated_provider(tmp_path / "sandboxes", **settings)
    # a sync fixture (pytest-jupyter runs no async fixtures): the check gets a loop of its own
    status = asyncio.run(isolated.check())
    assert status.available and status.isolated, status.detail
    return isolated

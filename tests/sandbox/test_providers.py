"""Providers are plugins: a package registers one in the entry-point group and the server
has it, without any change to this package; the admin's allow-list and the default."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_agentbuild.errors import ConfigError, SpecError
from jupyter_agentbuild.providers import (
    ENTRY_POINT_GROUP,
    ProviderCatalog,
    ProviderSettings,
    load_factories,
)
from jupyter_agentbuild.sandbox.base import ProviderStatus
from jupyter_agentbuild.sandbox.local_provider import LocalSandboxProvider

PLUGIN = """
from jupyter_agentbuild.sandbox.base import ProviderStatus
from jupyter_agentbuild.sandbox.local_provider import LocalSandboxProvider


class DockerLike(LocalSandboxProvider):
    name = "dockerlike"

    async def check(self):
        return ProviderStatus(True, True, "a container per build", network_off=True)


def make(settings):
    return DockerLike(settings.workspace_root / "dockerlike")
"""


@pytest.fixture
def plugin_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An installed distribution (a dist-info on sys.path) registering ``dockerlike``."""
    site = tmp_path / "site"
    (site / "agentbuild_dockerlike").mkdir(parents=True)
    (site / "agentbuild_dockerlike" / "__init__.py").write_text(PLUGIN)
    info = site / "agentbuild_dockerlike-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: agentbuild-dockerlike\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\ndockerlike = agentbuild_dockerlike:make\n"
    )
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("agentbuild_dockerlike", None)


def settings(tmp_path: Path, **kw: Any) -> ProviderSettings:
    return ProviderSettings(workspace_root=tmp_path / "sandboxes", **kw)


def test_a_registered_plugin_is_loaded_and_used(plugin_package: Path, tmp_path: Path) -> None:
    factories = load_factories()
    assert {"local", "process", "e2b", "dockerlike"} <= set(factories)
    catalog = ProviderCatalog.build(
        settings(tmp_path), default_setting="dockerlike", allowed=["dockerlike", "local"]
    )
    assert catalog.default == "dockerlike"
    assert type(catalog.providers["dockerlike"]).__name__ == "DockerLike"
    asyncio.run(catalog.check())
    assert catalog.statuses["dockerlike"] == ProviderStatus(
        True, True, "a container per build", network_off=True
    )
    assert catalog.choose(None, network=False, preview=False) == "dockerlike"
    with pytest.raises(SpecError) as info:
        catalog.choose("process", network=True, preview=False)
    assert info.value.code == "provider_not_allowed"
    with pytest.raises(SpecError) as info:
        catalog.choose("nope", network=True, preview=False)
    assert info.value.code == "invalid_provider"


def test_bad_setups_fail_at_start_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allowed_providers"):
        ProviderCatalog.build(settings(tmp_path), default_setting="auto", allowed=["docker"])
    with pytest.raises(ConfigError, match="allowed_providers"):
        ProviderCatalog.build(settings(tmp_path), default_setting="local", allowed=["process"])
    with pytest.raises(ConfigError, match="c.AgentBuild.provider"):
        ProviderCatalog.build(settings(tmp_path), default_setting="docker", allowed=None)
    # auto with only e2b allowed: e2b, refused until a key is configured
    catalog = ProviderCatalog.build(settings(tmp_path), default_setting="auto", allowed=["e2b"])
    assert catalog.default == "e2b" and "e2b" not in catalog.providers
    with pytest.raises(SpecError) as info:
        catalog.choose(None, network=True, preview=False)
    assert info.value.code == "provider_unavailable" and "E2B_API_KEY" in info.value.message


def test_a_broken_plugin_does_not_stop_the_server(plugin_package: Path, tmp_path: Path) -> None:
    (plugin_package / "agentbuild_dockerlike" / "__init__.py").write_text("raise ImportError('x')")
    factories = load_factories()
    assert "dockerlike" not in factories and "local" in factories
    assert isinstance(
        factories["process"](settings(tmp_path, allow_unisolated=True)), LocalSandboxProvider
    )

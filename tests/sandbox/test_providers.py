"""Providers are plugins: a package registers one in the entry-point group and the server
has it, without any change to this package; the admin's allow-list and the default."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

from jupyter_agentbuild.errors import ConfigError, SpecError
from jupyter_agentbuild.legacy_config import LegacyForwarder
from jupyter_agentbuild.providers import (
    ENTRY_POINT_GROUP,
    ProviderCatalog,
    configurable_classes,
    load_factories,
)
from jupyter_agentbuild.sandbox.base import ProviderStatus
from jupyter_agentbuild.sandbox.local_provider import LocalSandboxProvider

PLUGIN = """
from traitlets import Unicode

from jupyter_agentbuild.sandbox.base import ProviderStatus
from jupyter_agentbuild.sandbox.local_provider import LocalSandboxProvider


class DockerLike(LocalSandboxProvider):
    name = "dockerlike"
    image = Unicode("debian:stable", help="The image each build runs in.").tag(config=True)

    async def check(self):
        return ProviderStatus(True, True, f"a container of {self.image} per build", network_off=True)
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
        f"[{ENTRY_POINT_GROUP}]\ndockerlike = agentbuild_dockerlike:DockerLike\n"
    )
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("agentbuild_dockerlike", None)


def catalog(tmp_path: Path, config: Config | None = None, **kw: Any) -> ProviderCatalog:
    """A catalog as the server makes one: providers configured from ``config``."""
    base = Config({"ProviderBase": {"workspace_root": str(tmp_path / "sandboxes")}})
    base.merge(config or Config())
    return ProviderCatalog(config=base, **kw)


async def test_a_registered_plugin_is_loaded_and_used(plugin_package: Path, tmp_path: Path) -> None:
    factories = load_factories()
    assert {"local", "process", "e2b", "dockerlike"} <= set(factories)
    made = catalog(
        tmp_path,
        # the plugin's own trait, and a shared one set for it alone
        Config({"DockerLike": {"image": "alpine:3", "kill_grace": 0.5}}),
        provider="dockerlike",
        allowed_providers=["dockerlike", "local"],
    )
    assert made.default == "dockerlike"
    plugin = made.providers["dockerlike"]
    assert type(plugin).__name__ == "DockerLike"
    assert (getattr(plugin, "image", None), getattr(plugin, "kill_grace", None)) == (
        "alpine:3",
        0.5,
    )
    assert getattr(made.providers["local"], "kill_grace", None) == 5.0
    await made.check()
    assert made.statuses["dockerlike"] == ProviderStatus(
        True, True, "a container of alpine:3 per build", network_off=True
    )
    assert made.choose(None, network=False, preview=False) == "dockerlike"
    with pytest.raises(SpecError) as info:
        made.choose("process", network=True, preview=False)
    assert info.value.code == "provider_not_allowed"
    with pytest.raises(SpecError) as info:
        made.choose("nope", network=True, preview=False)
    assert info.value.code == "invalid_provider"


def test_bad_setups_fail_at_start_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allowed_providers"):
        catalog(tmp_path, provider="auto", allowed_providers=["docker"])
    with pytest.raises(ConfigError, match="allowed_providers"):
        catalog(tmp_path, provider="local", allowed_providers=["process"])
    with pytest.raises(ConfigError, match=r"c\.ProviderCatalog\.provider"):
        catalog(tmp_path, provider="docker")
    # auto with only e2b allowed: e2b, refused until a key is configured
    made = catalog(tmp_path, provider="auto", allowed_providers=["e2b"])
    assert made.default == "e2b" and "e2b" not in made.providers
    with pytest.raises(SpecError) as info:
        made.choose(None, network=True, preview=False)
    assert info.value.code == "provider_unavailable" and "E2B_API_KEY" in info.value.message


def test_a_broken_plugin_does_not_stop_the_server(plugin_package: Path, tmp_path: Path) -> None:
    (plugin_package / "agentbuild_dockerlike" / "__init__.py").write_text("raise ImportError('x')")
    factories = load_factories()
    assert "dockerlike" not in factories and "local" in factories
    made = catalog(tmp_path, factories=factories, allow_unisolated=True)
    assert isinstance(made.providers["process"], LocalSandboxProvider)
    assert set(made.providers) == {"local", "process"}, "e2b has no key here"


def test_old_agentbuild_settings_reach_the_providers(tmp_path: Path) -> None:
    """``c.AgentBuild.sandbox_max_memory`` (an old name) configures the isolated provider;
    where the new place is set too, the new place wins."""
    old = Config(
        {
            "AgentBuild": {
                "sandbox_max_memory": 1024**3,
                "kill_grace": 1.5,
                "allow_unisolated": True,
                "sandbox_max_processes": 10,
            },
            "IsolatedLocalProvider": {"max_processes": 20},
        }
    )
    forwarder = LegacyForwarder(configurable_classes(), keep=(), log=logging.getLogger("test"))
    made = catalog(tmp_path, forwarder.forward(old, Config()))
    local = made.providers["local"]
    assert (getattr(local, "max_memory", None), getattr(local, "max_processes", None)) == (
        1024**3,
        20,
    )
    assert getattr(made.providers["process"], "kill_grace", None) == 1.5
    assert made.allow_unisolated
    assert "IsolatedLocalProvider" not in old or "max_memory" not in old.IsolatedLocalProvider

"""``c.PreviewManager.<name>``: the previews' settings live on the manager, and each one
that used to be ``c.AgentBuild.preview_<name>`` says so (old configurations are
forwarded by that tag)."""

from __future__ import annotations

from traitlets.config import Config

from jupyter_agentbuild.preview.manager import PreviewManager

LEGACY = {
    "idle_timeout": "preview_idle_timeout",
    "connect_timeout": "preview_connect_timeout",
    "read_timeout": "preview_read_timeout",
    "csp": "preview_csp",
    "max_request_size": "preview_max_request_size",
    "origin_template": "preview_origin_template",
    "hub_routes_url": None,
}


def test_the_settings_are_the_managers_and_name_their_old_place() -> None:
    traits = PreviewManager.class_traits(config=True)
    assert {name: trait.metadata.get("legacy") for name, trait in traits.items()} == LEGACY
    assert all(trait.help for trait in traits.values())


def test_config_and_keywords_reach_the_manager() -> None:
    config = Config()
    config.PreviewManager.idle_timeout = 7.0
    config.PreviewManager.read_timeout = 3.0
    manager = PreviewManager(None, {}, config=config)  # type: ignore[arg-type]
    assert manager.idle_timeout == 7.0
    assert manager.stale_after == 30.0 and manager.poll_interval == 5.0  # no runner
    assert PreviewManager(None, {}, idle_timeout=0).idle_timeout == 0  # type: ignore[arg-type]

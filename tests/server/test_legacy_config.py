"""The forwarding of old ``c.AgentBuild.<name>`` settings, on config objects alone (the
server-level behaviour is in ``test_config.py``)."""

from __future__ import annotations

import logging

import pytest
from traitlets import Float, List, Unicode
from traitlets.config import Config, LoggingConfigurable

from jupyter_agentbuild.legacy_config import LegacyForwarder, legacy_names


class Provider(LoggingConfigurable):
    kill_grace = Float(5.0).tag(config=True)


class Isolated(Provider):
    hidden_paths = List(Unicode()).tag(config=True, legacy="sandbox_hidden_paths")


class Other(LoggingConfigurable):
    owner_name = Unicode("").tag(config=True)


def test_names_come_from_tags_or_the_trait_itself_once_per_defining_class() -> None:
    assert legacy_names([Isolated, Provider], package=__name__) == {
        "kill_grace": [("Provider", "kill_grace")],
        "sandbox_hidden_paths": [("Isolated", "hidden_paths")],
    }


def forwarder() -> LegacyForwarder:
    log = logging.getLogger(f"{__name__}.forwarder")
    return LegacyForwarder([Isolated, Other], keep={"owner_name"}, log=log, package=__name__)


def test_old_names_move_the_new_wins_and_each_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    moves = forwarder()
    incoming = Config(
        {
            "AgentBuild": {"sandbox_hidden_paths": ["/a"], "kill_grace": 1.0, "owner_name": "x"},
            "Provider": {"kill_grace": 3.0},
        }
    )
    with caplog.at_level(logging.WARNING):
        out = moves.forward(incoming, Config())
        again = moves.forward(incoming, out)
    assert out.Isolated.hidden_paths == ["/a"]
    assert out.Provider.kill_grace == 3.0  # the new spelling wins
    assert out.AgentBuild == {"owner_name": "x"}  # the app's own setting stays
    assert again.AgentBuild == {"owner_name": "x"}
    assert incoming.AgentBuild.kill_grace == 1.0  # what was passed in is not changed
    assert [r.getMessage() for r in caplog.records] == [
        "c.AgentBuild.sandbox_hidden_paths is deprecated: use c.Isolated.hidden_paths",
        "c.AgentBuild.kill_grace is deprecated: use c.Provider.kill_grace; ignored, as "
        "c.Provider.kill_grace is set too",
    ]


def test_a_new_name_loaded_before_wins_over_an_old_one_loaded_after() -> None:
    out = forwarder().forward(
        Config({"AgentBuild": {"kill_grace": 1.0}}), Config({"Provider": {"kill_grace": 3.0}})
    )
    assert "kill_grace" not in out.Provider and "kill_grace" not in out.AgentBuild


def test_a_config_without_old_names_passes_through_as_is() -> None:
    incoming = Config({"AgentBuild": {"owner_name": "x"}, "Isolated": {"hidden_paths": []}})
    assert forwarder().forward(incoming, Config()) is incoming

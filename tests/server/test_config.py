"""Configuration lives on the components; old ``c.AgentBuild.<name>`` settings still work.

Each case starts a real server with a config (and command line) and reads the values the
running components ended up with, and what the app logged about them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

from jupyter_agentbuild.config_reference import (
    documented_classes,
    own_config_traits,
    render_markdown,
)
from jupyter_agentbuild.wiring import CONFIGURABLES
from tests.conftest import server_config

REPO = Path(__file__).resolve().parents[2]


class AppLog:
    """What the extension app logged: its logger writes to stderr (traitlets configures
    its handlers when the app is made, so only the stream can be watched)."""

    def __init__(self, capfd: pytest.CaptureFixture[str]) -> None:
        self.capfd = capfd
        self.text = ""

    def about(self, word: str) -> list[str]:
        """The app's messages (without their ``[W time AgentBuild]`` prefix) with ``word``."""
        self.text += self.capfd.readouterr().err
        prefix = re.compile(r"^\[[A-Z] [0-9: .-]+ AgentBuild\] ")
        messages = [prefix.sub("", line) for line in self.text.splitlines() if prefix.match(line)]
        return [m for m in messages if word in m]


@pytest.fixture
def app_log(capfd: pytest.CaptureFixture[str]) -> AppLog:
    return AppLog(capfd)


@pytest.fixture
def sections() -> dict[str, dict[str, Any]]:
    """Config sections besides the tests' ``AgentBuild`` one (parametrized below)."""
    return {}


@pytest.fixture
def jp_server_config(
    app_log: AppLog, agentbuild_config: dict[str, Any], sections: dict[str, dict[str, Any]]
) -> Config:
    config = server_config(agentbuild_config, legacy=sections.pop("AgentBuild", {}))
    for name, values in sections.items():
        config[name] = Config(values)
    return config


def state(jp_serverapp: Any) -> Any:
    return jp_serverapp.web_app.settings["agentbuild"]


@pytest.mark.parametrize(
    "sections",
    [{"AgentBuild": {"artifact_retention_days": 7.0, "builds_per_window": 5}}],
)
def test_an_old_name_applies_and_warns_once(jp_serverapp: Any, app_log: AppLog) -> None:
    assert state(jp_serverapp).artifacts.retention_days == 7.0
    assert state(jp_serverapp).service.builds_per_window == 5
    assert app_log.about("artifact_retention_days") == [
        "c.AgentBuild.artifact_retention_days is deprecated: use c.ArtifactService.retention_days"
    ]
    assert app_log.about("builds_per_window") == [
        "c.AgentBuild.builds_per_window is deprecated: use c.BuildService.builds_per_window"
    ]
    assert app_log.about("not recognized") == []


@pytest.mark.parametrize(
    "sections",
    [{"ArtifactService": {"retention_days": 3.0}, "ArtifactCollector": {"max_files": 9}}],
)
def test_the_new_name_applies(jp_serverapp: Any, app_log: AppLog) -> None:
    assert state(jp_serverapp).artifacts.retention_days == 3.0
    assert state(jp_serverapp).runner.hooks[0].max_files == 9
    assert app_log.about("deprecated") == app_log.about("not recognized") == []


@pytest.mark.parametrize(
    "sections",
    [
        {
            "AgentBuild": {"max_artifact_bytes_per_owner": 100},
            "ArtifactService": {"max_bytes_per_owner": 200},
        }
    ],
)
def test_the_new_name_wins_over_the_old(jp_serverapp: Any, app_log: AppLog) -> None:
    assert state(jp_serverapp).artifacts.max_bytes_per_owner == 200
    assert app_log.about("max_artifact_bytes_per_owner") == [
        "c.AgentBuild.max_artifact_bytes_per_owner is deprecated: use "
        "c.ArtifactService.max_bytes_per_owner; ignored, as "
        "c.ArtifactService.max_bytes_per_owner is set too"
    ]


class TestCommandLine:
    @pytest.fixture
    def jp_argv(self) -> list[str]:
        return ["--AgentBuild.max_artifact_files=4", "--BuildService.max_spec_bytes=5000"]

    def test_both_spellings_work(self, jp_serverapp: Any, app_log: AppLog) -> None:
        assert state(jp_serverapp).runner.hooks[0].max_files == 4
        assert state(jp_serverapp).service.max_spec_bytes == 5000
        assert len(app_log.about("c.AgentBuild.max_artifact_files is deprecated")) == 1


@pytest.mark.parametrize("sections", [{"AgentBuild": {"no_such_option": 1}}])
def test_an_unknown_name_is_still_reported(jp_serverapp: Any, app_log: AppLog) -> None:
    assert app_log.about("`no_such_option` not recognized by `AgentBuild`")
    assert app_log.about("deprecated") == []


def test_help_all_lists_every_component_in_its_own_section() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = "from jupyter_agentbuild.app import main; main(['--help-all'])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    for cls in CONFIGURABLES:
        assert re.search(rf"\n{cls.__name__}\([^)]*\) options\n", result.stdout), cls
        for name in own_config_traits(cls):
            assert f"--{cls.__name__}.{name}=" in result.stdout


def test_the_reference_documents_every_option_with_its_old_name() -> None:
    text = render_markdown()
    for cls in documented_classes():
        traits = own_config_traits(cls)
        assert traits, cls
        for name, trait in traits.items():
            assert f"### `c.{cls.__name__}.{name}`" in text
            assert " ".join(trait.help.split()) in text
    assert "- Formerly: `c.AgentBuild.artifacts_root` (still accepted" in text
    assert "- Environment fallback: `AGENTBUILD_ARTIFACTS_ROOT`" in text


def test_the_reference_is_printed_by_its_module() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "jupyter_agentbuild.config_reference"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == render_markdown()

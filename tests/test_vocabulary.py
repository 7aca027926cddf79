"""The contract schema's lists of states are generated from the enums: neither side can drift."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jupyter_agentbuild.contract import schema
from jupyter_agentbuild.contract.__main__ import main
from jupyter_agentbuild.contract.generate import SCHEMA_PATH, is_current, write
from jupyter_agentbuild.vocabulary import (
    ACTIVE,
    TERMINAL,
    BuildStatus,
    EntryKind,
    EventType,
    PreviewState,
    Stream,
)


def test_the_shipped_schema_is_generated_from_the_vocabulary() -> None:
    assert is_current(), "run `python -m jupyter_agentbuild.contract --write`"
    assert main(["--check"]) == 0


def test_build_statuses_match_the_contract() -> None:
    statuses = schema()["x-statuses"]
    assert list(ACTIVE) == statuses["active"]
    assert list(TERMINAL) == statuses["terminal"]
    assert [*ACTIVE, *TERMINAL] == list(BuildStatus) == schema()["$defs"]["Status"]["enum"]


def test_preview_states_and_entry_enums_match_the_contract() -> None:
    contract = schema()
    assert list(PreviewState) == contract["x-preview-states"]
    entry = contract["$defs"]["Entry"]["properties"]
    assert list(EntryKind) == entry["kind"]["enum"]
    assert list(Stream) == entry["stream"]["enum"]
    assert list(EventType) == entry["type"]["enum"]


def test_a_stale_schema_is_detected_and_rewritten(tmp_path: Path) -> None:
    stale = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    stale["x-statuses"]["terminal"].remove("interrupted")
    stale["$defs"]["Entry"]["properties"]["type"]["enum"].pop()
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(stale), encoding="utf-8")
    assert not is_current(path)
    assert write(path)
    assert is_current(path)
    assert path.read_text(encoding="utf-8") == SCHEMA_PATH.read_text(encoding="utf-8")
    assert not write(path)


def test_the_command_shows_the_drift_and_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    stale["x-preview-states"].remove("failed")
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(stale), encoding="utf-8")
    assert main(["--check", "--schema", str(path)]) == 1
    assert '+  "x-preview-states": ["starting", "ready", "stopped", "failed"],' in (
        capsys.readouterr().err
    )
    assert main(["--write", "--schema", str(path)]) == 0
    assert main(["--check", "--schema", str(path)]) == 0


def test_a_member_is_its_string() -> None:
    assert BuildStatus.TIMED_OUT == "timed_out"
    assert f"{BuildStatus.RUNNING}" == "running"
    assert BuildStatus("failed").is_terminal
    assert not BuildStatus.QUEUED.is_terminal

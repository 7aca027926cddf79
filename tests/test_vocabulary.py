"""The enums and the contract schema list the same states: neither side can drift."""

from __future__ import annotations

from jupyter_agentbuild.contract import schema
from jupyter_agentbuild.vocabulary import ACTIVE, TERMINAL, BuildStatus, EntryKind, PreviewState


def test_build_statuses_match_the_contract() -> None:
    statuses = schema()["x-statuses"]
    assert list(ACTIVE) == statuses["active"]
    assert list(TERMINAL) == statuses["terminal"]
    assert [*ACTIVE, *TERMINAL] == list(BuildStatus)


def test_preview_states_and_entry_kinds_match_the_contract() -> None:
    contract = schema()
    assert list(PreviewState) == contract["x-preview-states"]
    assert list(EntryKind) == contract["$defs"]["Entry"]["properties"]["kind"]["enum"]


def test_a_member_is_its_string() -> None:
    assert BuildStatus.TIMED_OUT == "timed_out"
    assert f"{BuildStatus.RUNNING}" == "running"
    assert BuildStatus("failed").is_terminal
    assert not BuildStatus.QUEUED.is_terminal

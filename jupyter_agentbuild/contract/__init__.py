"""The contract's one definition: ``agentbuild.schema.json`` (statuses and shapes).

The server serves it (``agentbuild/api/contract.json``), its tests validate real responses
against it, and the JupyterLab extension's TypeScript types are generated from it when the
extension is built, so neither side hand-copies the other's status list or field names.
Its lists of states are not written by hand either: :mod:`.generate` writes them from
:mod:`..vocabulary` (``python -m jupyter_agentbuild.contract --check | --write``).
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

__all__ = ["SCHEMA_FILE", "active_statuses", "schema", "schema_text", "terminal_statuses"]

SCHEMA_FILE = "agentbuild.schema.json"


@cache
def schema_text() -> str:
    """The schema file's text, as shipped in the package."""
    return files(__name__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def schema() -> dict[str, Any]:
    """The parsed schema (a fresh copy: callers may not change the shared one)."""
    data: dict[str, Any] = json.loads(schema_text())
    return data


def active_statuses() -> tuple[str, ...]:
    """Statuses of a build that has not finished, in lifecycle order."""
    return tuple(schema()["x-statuses"]["active"])


def terminal_statuses() -> tuple[str, ...]:
    """Statuses a build ends with."""
    return tuple(schema()["x-statuses"]["terminal"])

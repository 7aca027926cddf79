"""What the magics show besides widgets: one-line errors and the log as plain text."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, cast

from IPython.display import display as ipython_display

from ..client import AgentBuildError
from ..client.records import Build
from ..vocabulary import EntryKind, EventType

__all__ = ["MagicError", "display", "failure_message", "print_entries"]

#: IPython's ``display``, typed (IPython's own signature is untyped).
display = cast(Callable[[Any], None], ipython_display)


class MagicError(Exception):
    """An API error, shown as one line (``code: message``) instead of a traceback."""

    def __init__(self, error: AgentBuildError) -> None:
        super().__init__(f"{error.message} [{error.code}]")
        self.error = error

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[31mAgentBuildError\x1b[0m: {self}"]


def failure_message(build: Build) -> str:
    """``build NAME (ID) failed; exit code 2; <error>``: why a ``--wait`` cell failed."""
    parts = [f"build {build.label} {build.status}"]
    if build.get("exit_code") not in (None, 0):
        parts.append(f"exit code {build['exit_code']}")
    if build.get("error"):
        parts.append(str(build["error"]))
    return "; ".join(parts)


def print_entries(entries: list[dict[str, Any]]) -> None:
    """Log lines as they are, status changes and step starts as ``──`` rules between them."""
    lines = []
    for entry in entries:
        if entry.get("kind") == EntryKind.LOG:
            lines.append(str(entry.get("text", "")))
        elif entry.get("type") == EventType.STATUS:
            lines.append(f"── status: {(entry.get('data') or {}).get('status')}")
        elif entry.get("type") == EventType.STEP_STARTED:
            data = entry.get("data") or {}
            lines.append(f"── step {data.get('step')} {data.get('name') or ''}".rstrip())
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()

"""The schema's lists of states are written from :mod:`..vocabulary`, never by hand.

``python -m jupyter_agentbuild.contract --write`` rewrites ``agentbuild.schema.json`` with
the enums' values in every place that lists them; ``--check`` (and a test) fails while the
file differs from what ``--write`` would produce. The JupyterLab extension generates its
TypeScript types from this file, so a state added to an enum reaches the browser's types in
one step, with nothing copied by hand on either side.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..vocabulary import ACTIVE, TERMINAL, BuildStatus, EntryKind, EventType, PreviewState, Stream

__all__ = ["SCHEMA_PATH", "apply_vocabulary", "generated_text", "is_current", "render", "write"]

SCHEMA_PATH = Path(__file__).with_name("agentbuild.schema.json")
INDENT = "  "
#: Objects shorter than this (with their indent and key) stay on one line.
WIDTH = 100


def apply_vocabulary(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every enumerated state taken from the vocabulary (changed in place)."""
    schema["x-statuses"] = {"active": list(ACTIVE), "terminal": list(TERMINAL)}
    schema["x-preview-states"] = list(PreviewState)
    defs = schema["$defs"]
    defs["Status"]["enum"] = list(BuildStatus)
    defs["Preview"]["properties"]["state"]["enum"] = list(PreviewState)
    entry = defs["Entry"]["properties"]
    entry["kind"]["enum"] = list(EntryKind)
    entry["stream"]["enum"] = list(Stream)
    entry["type"] = {"enum": list(EventType), "description": "what an event entry reports"}
    return schema


def render(value: Any, indent: str = "", key: str = "") -> str:
    """JSON text a reviewer can read: short objects and every list on one line, others nest.

    Deterministic, so the file in the repository and a fresh rendering compare as text.
    """
    flat = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, dict) or len(indent) + len(key) + len(flat) <= WIDTH:
        return flat
    inner = indent + INDENT
    members = []
    for name, member in value.items():
        head = f"{json.dumps(name, ensure_ascii=False)}: "
        members.append(f"{inner}{head}{render(member, inner, head)}")
    return "{\n" + ",\n".join(members) + "\n" + indent + "}"


def generated_text(path: Path = SCHEMA_PATH) -> str:
    """What ``path`` should hold: its shapes as written, its states from the vocabulary."""
    schema = json.loads(path.read_text(encoding="utf-8"))
    return render(apply_vocabulary(schema)) + "\n"


def is_current(path: Path = SCHEMA_PATH) -> bool:
    """True when ``path`` is exactly what :func:`write` would leave there."""
    return path.read_text(encoding="utf-8") == generated_text(path)


def write(path: Path = SCHEMA_PATH) -> bool:
    """Rewrite ``path`` from the vocabulary; True if it changed."""
    text = generated_text(path)
    if path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True

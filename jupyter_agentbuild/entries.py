"""Entry encoding: each entry is serialized to JSON exactly once.

The same string is stored in the database chunk, sent to every WebSocket client
and returned by the REST log page, so no layer re-encodes logs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from .textsize import size_of
from .vocabulary import ACTIVE, TERMINAL, EntryKind

# The C string encoder behind json.dumps, without json.dumps' per-call overhead.
_encode_str = json.encoder.c_encode_basestring or json.encoder.py_encode_basestring  # type: ignore[attr-defined]

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "encode_event",
    "encode_logs",
    "iso",
    "join_array",
    "size_of",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 UTC with a ``Z``: the contract's timestamp format."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def encode_logs(
    first_seq: int,
    ts: str,
    stream: str,
    step: int,
    lines: list[str],
    continued: bool,
) -> list[str]:
    """Encode a batch of log lines with consecutive seqs starting at ``first_seq``."""
    head = f'"ts":"{ts}","kind":"{EntryKind.LOG}","stream":"{stream}","step":{step},"text":'
    out = [
        f'{{"seq":{seq},{head}{_encode_str(text)}}}' for seq, text in enumerate(lines, first_seq)
    ]
    if continued and out:
        out[-1] = out[-1][:-1] + ',"continued":true}'
    return out


def encode_event(seq: int, ts: str, type_: str, data: dict[str, Any]) -> str:
    payload = json.dumps(data, separators=(",", ":"), default=str)
    return f'{{"seq":{seq},"ts":"{ts}","kind":"{EntryKind.EVENT}","type":{_encode_str(type_)},"data":{payload}}}'


def join_array(entries: list[str]) -> str:
    """A JSON array of already-encoded entries, built without decoding them."""
    return "[" + ",".join(entries) + "]"

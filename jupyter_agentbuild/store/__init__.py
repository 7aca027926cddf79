"""Persistence: builds, their log/event stream and quotas, on SQLite or PostgreSQL.

``Store`` (repository.py, with entry_stream.py and quotas.py) holds the queries on builds,
entries and quotas, ``ArtifactRecords`` (artifacts.py) those on artifacts; nothing outside
this package writes SQL.
"""

from __future__ import annotations

from ..vocabulary import ACTIVE as ACTIVE_STATUSES
from ..vocabulary import TERMINAL as TERMINAL_STATUSES
from .engine import make_engine, redact_url
from .migrate import upgrade
from .repository import SeqConflict, Store
from .rows import BuildRow

__all__ = [
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "BuildRow",
    "SeqConflict",
    "Store",
    "make_engine",
    "redact_url",
    "upgrade",
]

"""Persistence: builds, their log/event stream and quotas, on SQLite or PostgreSQL.

``Store`` (repository.py) holds every query; nothing outside this package writes SQL.
"""

from __future__ import annotations

from .engine import make_engine, redact_url
from .migrate import upgrade
from .models import ACTIVE_STATUSES, TERMINAL_STATUSES, BuildRow
from .repository import SeqConflict, Store

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

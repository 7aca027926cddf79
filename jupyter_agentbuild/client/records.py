"""Builds and other records as dicts with attribute access (``b.id``, ``b.status``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from ..vocabulary import ACTIVE, LIVE_PREVIEW, TERMINAL, BuildStatus

__all__ = ["STATUSES", "TERMINAL", "Build", "Entry", "Record", "is_own_origin", "parse_time"]

#: Every build status, in lifecycle order (re-exported from the shared vocabulary).
STATUSES = (*ACTIVE, *TERMINAL)

#: An Entry as the server sends it (its shape is ``Entry`` in the contract schema):
#: ``{"seq", "ts", "kind", ...}``, ``kind`` being ``log`` or ``event``.
Entry = dict[str, Any]


class Record(dict[str, Any]):
    """A JSON object from the API: still a ``dict`` (so ``json.dumps`` works), plus attributes.

    Nested objects come back as :class:`Record` too; a missing field is an ``AttributeError``.
    """

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}") from None
        return Record(value) if isinstance(value, dict) and not isinstance(value, Record) else value

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | {k for k in self if isinstance(k, str)})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"


class Build(Record):
    """A build as ``GET api/builds/{id}`` returns it."""

    @property
    def id(self) -> str:
        return str(self["id"])

    @property
    def status(self) -> str:
        return str(self.get("status") or "")

    @property
    def last_seq(self) -> int:
        return int(self.get("last_seq") or 0)

    @property
    def terminal(self) -> bool:
        """True once the build has finished, whatever the outcome."""
        return self.status in TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status == BuildStatus.SUCCEEDED

    @property
    def label(self) -> str:
        """``name (id)``, or the id alone for unnamed builds."""
        name = self.get("name")
        return f"{name} ({self.id})" if name else self.id

    @property
    def preview_url(self) -> str | None:
        """Where a browser opens the preview: ``preview.url``, its own origin (the path URL
        on servers without one); ``None`` without a live preview."""
        preview = self.get("preview") or {}
        if preview.get("state") not in LIVE_PREVIEW:
            return None  # the URL dies with the preview
        url = preview.get("url") or preview.get("path_url")
        return str(url) if url else None

    @property
    def preview_path_url(self) -> str | None:
        """``{base_url}agentbuild/preview/{id}/``: the path proxy, for token clients."""
        preview = self.get("preview") or {}
        if not preview:
            return None
        path = preview.get("path_url")
        if path:
            return str(path)
        url = preview.get("url")  # servers before own origins sent the path as ``url``
        return str(url) if url and not is_own_origin(url) else None

    @property
    def preview_own_origin(self) -> bool:
        """True when ``preview.url`` is an origin of its own (not Jupyter's)."""
        preview = self.get("preview") or {}
        return is_own_origin(preview.get("url"), preview.get("path_url"))

    def elapsed(self, now: datetime | None = None) -> float | None:
        """Seconds between start (or creation) and finish (or ``now``)."""
        start = parse_time(self.get("started_at")) or parse_time(self.get("created_at"))
        if start is None:
            return None
        end = parse_time(self.get("finished_at")) or now or datetime.now(UTC)
        return max(0.0, (end - start).total_seconds())

    def __repr__(self) -> str:
        return f"Build(id={self.get('id')!r}, name={self.get('name')!r}, status={self.get('status')!r})"


def is_own_origin(url: Any, path_url: Any = None) -> bool:
    """An absolute http(s) URL at ``/`` that is not the path proxy's: a preview's own origin.

    Anything else (a relative path, another scheme such as ``javascript:``) is not one.
    """
    if not isinstance(url, str) or not url or url == path_url:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and "@" not in parts.netloc
        and parts.path in ("", "/")
        and not parts.query
        and not parts.fragment
    )


def parse_time(value: Any) -> datetime | None:
    """Parse an ISO-8601 timestamp (``Z`` accepted); naive times are taken as UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

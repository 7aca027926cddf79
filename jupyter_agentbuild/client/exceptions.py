"""Typed client errors carrying the server's ``error.code``, ``message`` and ``field``.

HTTP answers map onto the same classes the server raises (``jupyter_agentbuild.errors``),
so ``except NotFound`` works the same on both sides; ``status`` is the HTTP status received.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import (
    BY_HTTP_STATUS,
    AgentBuildError,
    ConfigError,
    Conflict,
    Forbidden,
    NotFound,
    QuotaExceeded,
    SpecError,
    TooLarge,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "AgentBuildError",
    "BuildFailed",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "NotFound",
    "QuotaExceeded",
    "ServerNotFound",
    "ServerUnreachable",
    "SpecError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "error_from_response",
]


class ServerNotFound(AgentBuildError):
    """No server URL could be found in the arguments or the environment."""

    status = 0
    code = "server_not_found"


class ServerUnreachable(Unavailable):
    """The server did not answer (connection refused, timeout, dropped stream)."""

    code = "server_unreachable"


class BuildFailed(AgentBuildError):
    """A waited-for build ended in another status than ``succeeded``."""

    status = 0
    code = "build_failed"

    def __init__(self, message: str, *, build: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.build = build

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback: "Run all" stops on a clear message.
        return [f"\x1b[31mBuildFailed\x1b[0m: {self.message}"]


def error_from_response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> AgentBuildError:
    """Turn an HTTP error answer into a typed error; never includes request headers."""
    code: str | None = None
    message = ""
    field: str | None = None
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        err = payload["error"]
        code = str(err["code"]) if err.get("code") else None
        message = str(err.get("message") or "")
        field = str(err["field"]) if err.get("field") else None
    elif isinstance(payload, dict) and payload.get("message"):
        # jupyter_server's own error pages (e.g. a 403 from the authorizer).
        message = str(payload["message"])
    if not message:
        message = f"HTTP {status}"
    cls = BY_HTTP_STATUS.get(status, AgentBuildError)
    if cls is Unavailable and code == ConfigError.code:
        cls = ConfigError
    kept = {}
    if headers is not None and headers.get("Retry-After"):
        kept["Retry-After"] = str(headers["Retry-After"])
    error = cls(
        message,
        code=code or (None if cls is not AgentBuildError else f"http_{status}"),
        field=field,
        headers=kept,
    )
    error.status = status
    return error


def retry_after(error: AgentBuildError) -> float | None:
    """Seconds from a 429's ``Retry-After`` header, when given."""
    value = error.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None

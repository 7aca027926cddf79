"""Errors that cross layers and map to the contract's JSON error shape.

Every failure a client can cause or observe is an :class:`AgentBuildError` with an
HTTP status and a machine ``code``; handlers turn it into
``{"error": {"code", "message", "field"}}`` and never show a traceback.
"""

from __future__ import annotations


class AgentBuildError(Exception):
    """Base error: an HTTP status, a machine code, a human message, an optional field."""

    status = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return {"error": body}


class SpecError(AgentBuildError):
    """The BuildSpec (or a query parameter) is invalid."""

    status = 400
    code = "invalid_spec"


class NotFound(AgentBuildError):
    """Missing, or owned by someone else: both look the same from outside."""

    status = 404
    code = "not_found"


class Forbidden(AgentBuildError):
    """Authenticated, but this request may not be made (e.g. from another site)."""

    status = 403
    code = "forbidden"


class Conflict(AgentBuildError):
    """The build is in the wrong state for this request."""

    status = 409
    code = "conflict"


class TooLarge(AgentBuildError):
    status = 413
    code = "too_large"


class QuotaExceeded(AgentBuildError):
    """Rate limit reached; ``headers`` carries ``Retry-After``."""

    status = 429
    code = "quota_exceeded"


class Unavailable(AgentBuildError):
    """A dependency (database, sandbox provider) is down."""

    status = 503
    code = "unavailable"


class ConfigError(AgentBuildError):
    """The server's configuration cannot work; the message names the setting."""

    status = 503
    code = "misconfigured"

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


class Unauthorized(AgentBuildError):
    """The credential is missing or wrong (Jupyter's own check answers these)."""

    status = 401
    code = "unauthorized"


class Forbidden(AgentBuildError):
    """Authenticated, but this request may not be made (authorizer, XSRF or origin check,
    or a request from another site)."""

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


#: The errors an HTTP answer's status maps onto, one class per status: the client raises
#: the class the server raised, so ``except NotFound`` reads the same on both sides.
BY_HTTP_STATUS: dict[int, type[AgentBuildError]] = {
    cls.status: cls
    for cls in (
        SpecError,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        TooLarge,
        QuotaExceeded,
        Unavailable,
    )
}


#: SQLSTATE classes of a database that cannot be reached or is restarting: connection
#: exceptions (08...) and operator intervention (57P01 admin shutdown, 57P02 crash
#: shutdown, 57P03 cannot connect now).
_UNAVAILABLE_SQLSTATES = ("08", "57P")


def database_unavailable(exc: BaseException) -> bool:
    """Is ``exc`` the database being down or restarting (answered 503, retried by the
    client), rather than a defect? Connection failures, timeouts and disconnects are;
    integrity, programming and data errors are not."""
    from sqlalchemy import exc as sa

    if isinstance(exc, sa.TimeoutError):  # no pool connection in time
        return True
    if isinstance(exc, sa.DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if isinstance(state, str) and state:
            return state.startswith(_UNAVAILABLE_SQLSTATES)
        if isinstance(orig, ConnectionError | OSError | TimeoutError):
            return True  # the store's engine wraps a refused connection this way
        if type(orig).__module__ == "sqlite3":
            # SQLite says OperationalError for "no such column" too: only a busy or
            # unreachable file is the database being unavailable
            text = str(orig).lower()
            return any(word in text for word in ("locked", "busy", "unable to open", "disk i/o"))
        return isinstance(exc, sa.InterfaceError) or "connection" in str(orig).lower()
    return isinstance(exc, ConnectionError)  # the driver's own, unwrapped (asyncpg connect)

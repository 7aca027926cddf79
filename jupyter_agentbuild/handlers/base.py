"""Shared handler behaviour: authentication, owner, and the contract's error shape."""

from __future__ import annotations

import json
import logging
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web

from ..errors import AgentBuildError, SpecError, Unavailable, database_unavailable
from ..identity import request_owner

AUTH_RESOURCE = "agentbuild"
log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    429: "quota_exceeded",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}


#: What a request that met a database being down or restarting answers.
DATABASE_DOWN = Unavailable(
    "the build database is unavailable; try again shortly", headers={"Retry-After": "1"}
)


def error_body(status: int, exc: BaseException | None, reason: str) -> tuple[int, dict[str, Any]]:
    """Map any exception to ``(status, {"error": {...}})``; never a traceback."""
    if exc is not None and not isinstance(exc, AgentBuildError) and database_unavailable(exc):
        exc = DATABASE_DOWN
    if isinstance(exc, AgentBuildError):
        return exc.status, exc.to_json()
    if isinstance(exc, web.HTTPError):
        message = exc.log_message or exc.reason or reason
        if exc.args and exc.log_message and "%" in exc.log_message:
            try:
                message = exc.log_message % exc.args
            except TypeError:
                pass
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return exc.status_code, {"error": {"code": code, "message": message}}
    if status >= 500:
        message = "internal server error; the server log has the details"
        return status, {"error": {"code": "internal_error", "message": message}}
    return status, {"error": {"code": HTTP_CODES.get(status, "http_error"), "message": reason}}


class JsonErrors(web.RequestHandler):
    """Errors in the contract's shape (``{"error": {"code", "message"}}``), never a page or
    a traceback: for the REST handlers and for refused WebSocket upgrades alike."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        if exc is not None and not isinstance(exc, AgentBuildError) and database_unavailable(exc):
            exc = DATABASE_DOWN
        status, body = error_body(status_code, exc, self._reason)
        if isinstance(exc, AgentBuildError):
            for key, value in exc.headers.items():
                self.set_header(key, value)
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(body))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if value is not None and not isinstance(value, AgentBuildError):
            if database_unavailable(value):
                log.warning(
                    "agentbuild: %s %s -> 503, the database is unavailable: %s",
                    self.request.method,
                    self.request.path,
                    type(value).__name__,
                )
                return
        if isinstance(value, AgentBuildError) and value.status < 500:
            log.debug("agentbuild: %s %s -> %s", self.request.method, self.request.path, value.code)
            return
        super().log_exception(typ, value, tb)


class AgentBuildHandler(JsonErrors, APIHandler):
    """Base of every REST handler of the extension."""

    auth_resource = AUTH_RESOURCE

    @property
    def agentbuild(self) -> Any:
        return self.settings["agentbuild"]

    @property
    def owner(self) -> str:
        return request_owner(self)

    def query(self) -> dict[str, str]:
        return {k: self.get_query_argument(k) for k in self.request.query_arguments}

    def json_body(self, body: bytes | None = None) -> Any:
        """The decoded body (``body``, else the request's); 400 ``invalid_json`` for what is
        not JSON, or nested too deeply to decode."""
        try:
            return json.loads((self.request.body if body is None else body) or b"null")
        except RecursionError:
            raise SpecError("the request body is nested too deeply", code="invalid_json") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise SpecError(
                f"the request body is not valid JSON: {exc}", code="invalid_json"
            ) from None

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(data))


class NotFoundHandler(AgentBuildHandler):
    """Unknown paths under ``agentbuild/`` answer the contract's 404, not an HTML page."""

    def _not_found(self) -> None:
        raise web.HTTPError(404, "no such endpoint")

    @web.authenticated
    def get(self, *args: Any) -> None:
        self._not_found()

    @web.authenticated
    def post(self, *args: Any) -> None:
        self._not_found()

    @web.authenticated
    def delete(self, *args: Any) -> None:
        self._not_found()

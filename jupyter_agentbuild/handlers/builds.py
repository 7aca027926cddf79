"""REST handlers for builds: each verb parses, calls the service, serializes."""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..build_json import build_json
from ..errors import TooLarge
from ..urls import build_url
from .base import AgentBuildHandler


class BuildHandlerBase(AgentBuildHandler):
    """Serializes Builds; each subclass defines only the verbs its route supports, so any
    other verb is a 405 (a subclass of a handler would inherit, and misroute, its verbs)."""

    def _build(self, row: Any, *, spec_complete: bool = True) -> dict[str, Any]:
        return build_json(
            row,
            base_url=self.base_url,
            preview_origin=self._preview_origin,
            spec_complete=spec_complete,
        )

    def _preview_origin(self, label: str) -> str | None:
        """The own-origin URL of a preview for a browser that reached us as this request
        did (the template of a deployment, or ``{label}.localhost`` on a loopback name)."""
        origins = self.agentbuild.preview_origins
        return origins.url(label, scheme=self.request.protocol, request_host=self.request.host)  # type: ignore[no-any-return]

    def _url(self, build_id: str) -> str:
        return build_url(self.base_url, build_id)


@web.stream_request_body
class BuildsHandler(BuildHandlerBase):
    """``GET`` lists (each spec summarised, ``spec_complete: false``); ``POST`` creates.

    The request body streams in, so one larger than ``max_request_bytes`` is refused
    (413 ``request_too_large``) without being held: its announced length is refused before
    a byte is read, and a chunked one is dropped as it arrives."""

    _body: bytearray
    _too_large = False

    async def prepare(self) -> None:  # type: ignore[override]
        self._body = bytearray()
        await super().prepare()
        if self._finished or self.current_user is None:
            return  # the method's @authenticated answers
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self._limit():
            self._refuse()

    def _limit(self) -> int:
        return int(self.agentbuild.max_request_bytes)

    def _refuse(self) -> None:
        raise TooLarge(
            f"the request body is larger than {self._limit()} bytes",
            code="request_too_large",
        )

    def data_received(self, chunk: bytes) -> None:
        if self._too_large:
            return
        if len(self._body) + len(chunk) > self._limit():
            self._too_large = True
            self._body = bytearray()  # dropped: what follows is read and discarded
            return
        self._body += chunk

    @web.authenticated
    @authorized
    async def get(self) -> None:
        rows, next_cursor = await self.agentbuild.service.list_builds(self.owner, self.query())
        builds = [self._build(r, spec_complete=False) for r in rows]
        self.write_json({"builds": builds, "next": next_cursor})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        if self._too_large:
            self._refuse()
        body, self._body = bytes(self._body), bytearray()
        row = await self.agentbuild.service.create(self.owner, self.json_body(body))
        self.set_header("Location", self._url(row.id))
        self.write_json(self._build(row), status=201)


class BuildHandler(BuildHandlerBase):
    @web.authenticated
    @authorized
    async def get(self, build_id: str) -> None:
        row = await self.agentbuild.service.get(self.owner, build_id)
        self.write_json(self._build(row))

    @web.authenticated
    @authorized
    async def delete(self, build_id: str) -> None:
        await self.agentbuild.service.delete(self.owner, build_id)
        self.set_status(204)
        self.finish()


class CancelHandler(BuildHandlerBase):
    @web.authenticated
    @authorized
    async def post(self, build_id: str) -> None:
        row = await self.agentbuild.service.cancel(self.owner, build_id)
        self.write_json(self._build(row), status=202)


class LogsHandler(AgentBuildHandler):
    @web.authenticated
    @authorized
    async def get(self, build_id: str) -> None:
        query = self.query()
        if query.get("format") == "text":
            await self._text(build_id)
            return
        page = await self.agentbuild.service.logs(self.owner, build_id, query)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(page.to_json_text())

    async def _text(self, build_id: str) -> None:
        """``?format=text``: every log line as streamed plain text (never rendered as HTML)."""
        lines = self.agentbuild.service.log_text(self.owner, build_id)
        first = await anext(lines, None)  # errors (404) surface before any byte is sent
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "sandbox")
        if first is not None:
            self.write(first)
            await self.flush()
            async for text in lines:
                self.write(text)
                await self.flush()
        self.finish()

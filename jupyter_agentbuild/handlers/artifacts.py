"""Artifact endpoints: the manifest, single files (Range, ETag), zip and tar.gz streams.

Each verb asks :class:`~jupyter_agentbuild.artifacts.service.ArtifactService` and writes
what it gets back, one flushed chunk at a time: a slow client slows its own download and
never makes the server buffer. Files are served with ``Content-Security-Policy: sandbox``
and ``X-Content-Type-Options: nosniff``, so a built page can never act as the Jupyter
origin.

:func:`serve_static_preview` serves a build's artifacts as a static site; it is the
fallback of the preview route (``{base_url}agentbuild/preview/{id}/...``) for builds
without a live preview, and is called by that route's handler.
"""

from __future__ import annotations

import logging
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from tornado import web
from tornado.iostream import StreamClosedError

from ..artifacts.http import (
    DOWNLOAD_CSP,
    PREVIEW_CSP,
    Unsatisfiable,
    attachment,
    etag,
    etag_matches,
    parse_range,
)
from ..artifacts.service import ArtifactFile, ArtifactService
from ..errors import Unavailable
from ..identity import request_owner
from .base import AgentBuildHandler

log = logging.getLogger(__name__)


def artifact_service_of(handler: JupyterHandler) -> ArtifactService:
    """The server's artifact service; 503 on a server that runs without one."""
    service: ArtifactService | None = getattr(handler.settings["agentbuild"], "artifacts", None)
    if service is None:
        raise Unavailable("artifacts are not enabled on this server")
    return service


def finish_with_type(handler: JupyterHandler, content_type: str | None) -> None:
    """Finish; an ``APIHandler`` would otherwise overwrite the type with JSON's."""
    if isinstance(handler, APIHandler) and content_type is not None:
        handler.finish(set_content_type=content_type)
    else:
        handler.finish()


async def write_chunks(handler: JupyterHandler, chunks: Any, what: str, content_type: str) -> None:
    """Write every chunk, flushing each, then finish. A client that went away ends it
    quietly; a failure once the headers are out cuts the connection, so the client
    sees an incomplete download."""
    try:
        try:
            async for chunk in chunks:
                handler.write(chunk)
                await handler.flush()
        finally:
            await chunks.aclose()
    except StreamClosedError:
        return
    except Exception as exc:
        log.error("agentbuild: %s failed mid-stream: %s", what, exc)
        handler.request.connection.close()  # type: ignore[union-attr]
        handler._finished = True  # nothing more may be written on this request
        return
    finish_with_type(handler, content_type)


async def send_file(
    handler: JupyterHandler,
    service: ArtifactService,
    item: ArtifactFile,
    *,
    csp: str,
    status: int = 200,
    head: bool = False,
) -> None:
    """Answer with one artifact: validators, a single byte range, security headers."""
    size, tag = item.size, etag(item.sha256)
    handler.set_header("Content-Type", item.content_type)
    handler.set_header("ETag", tag)
    handler.set_header("Accept-Ranges", "bytes")
    handler.set_header("Cache-Control", "private, no-cache")
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Content-Security-Policy", csp)
    request = handler.request.headers
    if status == 200 and etag_matches(request.get("If-None-Match"), tag):
        handler.set_status(304)
        finish_with_type(handler, item.content_type)
        return
    start, length = 0, size
    if status == 200 and ("If-Range" not in request or etag_matches(request.get("If-Range"), tag)):
        try:
            byte_range = parse_range(request.get("Range"), size)
        except Unsatisfiable:
            handler.set_status(416)
            handler.set_header("Content-Range", f"bytes */{size}")
            handler.set_header("Content-Length", "0")
            finish_with_type(handler, item.content_type)
            return
        if byte_range is not None:
            status, start, length = 206, byte_range.start, byte_range.length
            handler.set_header("Content-Range", byte_range.header(size))
    handler.set_status(status)
    handler.set_header("Content-Length", str(length))
    if head or length == 0:
        finish_with_type(handler, item.content_type)
        return
    chunks = await service.reader(item, start, length)
    await write_chunks(handler, chunks, f"download of {item.path}", item.content_type)


async def serve_static_preview(
    handler: JupyterHandler, build_id: str, path: str, *, head: bool = False
) -> None:
    """Serve ``path`` of build ``build_id``'s artifacts as a static site.

    For the preview route's handler, which must already have authenticated and
    authorized the request (resource ``agentbuild``, action ``read``). ``path`` is the
    part of the URL after ``preview/{id}/``, percent-decoded (Tornado's path argument).
    A directory serves its ``index.html``; ``dir`` redirects to ``dir/``; a missing page
    serves the site's ``404.html`` (status 404) when it has one. Another owner's build,
    a missing build or path raise :class:`~jupyter_agentbuild.errors.NotFound`; a path
    with ``..`` raises :class:`~jupyter_agentbuild.errors.SpecError` (400): the caller's
    ``write_error`` renders them (``AgentBuildHandler`` does, in the contract's shape).
    """
    state = handler.settings["agentbuild"]
    service = artifact_service_of(handler)
    owner = request_owner(handler)
    if path == "" and not handler.request.path.endswith("/"):
        await service.static(owner, build_id, path)  # 404 for a missing build first
        handler.redirect(handler.request.path.rsplit("/", 1)[-1] + "/")
        return
    target = await service.static(owner, build_id, path)
    if target.redirect is not None:
        handler.redirect(target.redirect)
        return
    assert target.file is not None
    # The same policy as the live preview (``c.PreviewManager.csp``), or a strict default.
    configured = state.previews.csp if state.previews is not None else ""
    csp = f"frame-ancestors 'self'; {configured}" if configured else PREVIEW_CSP
    await send_file(handler, service, target.file, csp=csp, status=target.status, head=head)


class ArtifactsHandler(AgentBuildHandler):
    """``GET api/builds/{id}/artifacts``: the manifest."""

    @web.authenticated
    @authorized
    async def get(self, build_id: str) -> None:
        self.write_json(await artifact_service_of(self).manifest(self.owner, build_id))


class ArtifactFileHandler(AgentBuildHandler):
    """``GET api/builds/{id}/artifacts/{path}``: one file, with Range support."""

    @web.authenticated
    @authorized
    async def get(self, build_id: str, path: str) -> None:
        await self._send(build_id, path, head=False)

    @web.authenticated
    @authorized
    async def head(self, build_id: str, path: str) -> None:
        await self._send(build_id, path, head=True)

    async def _send(self, build_id: str, path: str, *, head: bool) -> None:
        service = artifact_service_of(self)
        item = await service.file(self.owner, build_id, path)
        if self.get_query_argument("download", "") not in ("", "0", "false"):
            self.set_header("Content-Disposition", attachment(path.rsplit("/", 1)[-1]))
        await send_file(self, service, item, csp=DOWNLOAD_CSP, head=head)


class ArchiveHandler(AgentBuildHandler):
    """``GET api/builds/{id}/artifacts.zip`` and ``.../artifacts.tar.gz``: streamed."""

    @web.authenticated
    @authorized
    async def get(self, build_id: str, fmt: str) -> None:
        archive = await artifact_service_of(self).archive(self.owner, build_id, fmt)
        self.set_header("Content-Type", archive.content_type)
        self.set_header("Content-Disposition", attachment(archive.filename))
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "private, no-store")
        if archive.length is not None:
            self.set_header("Content-Length", str(archive.length))
        await write_chunks(self, archive.chunks, f"{fmt} of build {build_id}", archive.content_type)


class StaticPreviewHandler(AgentBuildHandler):
    """A handler serving only the static preview (for the preview route to use or
    subclass; this module registers no route for it)."""

    @web.authenticated
    @authorized
    async def get(self, build_id: str, path: str = "") -> None:
        await serve_static_preview(self, build_id, path)

    @web.authenticated
    @authorized
    async def head(self, build_id: str, path: str = "") -> None:
        await serve_static_preview(self, build_id, path, head=True)

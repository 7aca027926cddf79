"""AsyncClient: the agentbuild REST API over httpx and the log stream over a WebSocket."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode, urljoin

import httpx
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, websocket_connect

from ..vocabulary import LIVE_PREVIEW
from .connection import ServerInfo, resolve_server
from .exceptions import AgentBuildError, Conflict, ServerUnreachable, error_from_response
from .records import Build, Entry, Record

# Aliases: inside the classes, ``list`` is a method name.
BuildList = list[Build]
RecordList = list[Record]
EntryBatch = list[Entry]

MAX_WS_MESSAGE = 64 * 1024 * 1024
RECONNECT_ATTEMPTS = 6


def _bid(build_id: str) -> str:
    return quote(str(build_id), safe="")


def preview_url_of(build: Build, server: ServerInfo, *, path: bool = False) -> str:
    """The absolute preview URL of ``build`` (see :meth:`AsyncClient.preview_url`)."""
    preview = build.get("preview") or {}
    state = preview.get("state")
    if state not in LIVE_PREVIEW and not (path and state):
        what = f"its preview is {state}" if state else "it has no preview"
        raise Conflict(f"build {build.id}: {what}", code="no_preview")
    if not path and build.preview_own_origin:
        return str(preview["url"])
    relative = build.preview_path_url or server.browser_path("preview", build.id) + "/"
    return urljoin(server.url, relative)


class AsyncClient:
    """Talk to the agentbuild API of one Jupyter server.

    ``AsyncClient()`` finds the server from the environment (see :func:`resolve_server`);
    use it as ``async with AsyncClient() as c: ...`` or call :meth:`aclose`.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        server: ServerInfo | None = None,
    ) -> None:
        self.server = server or resolve_server(url, token)
        self.timeout = timeout
        headers = {"Accept": "application/json", **self.server.auth_headers()}
        cookies: dict[str, str] = {}
        if not self.server.token:
            # Without a token, Jupyter's XSRF rule wants a cookie and a header that match.
            xsrf = secrets.token_hex(16)
            headers["X-XSRFToken"] = xsrf
            cookies["_xsrf"] = xsrf
        self._http = httpx.AsyncClient(
            base_url=self.server.api_url,
            headers=headers,
            cookies=cookies,
            timeout=timeout,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"AsyncClient(url={self.server.url!r})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections; the client cannot be used afterwards."""
        await self._http.aclose()

    # -- REST -----------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = await self._http.request(method, path, json=json_body, params=clean)
        except httpx.TransportError as exc:
            raise ServerUnreachable(
                f"cannot reach the Jupyter server at {self.server.url}: {exc or type(exc).__name__}"
            ) from exc
        if resp.status_code >= 400:
            raise error_from_response(resp.status_code, resp.content, resp.headers)
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise AgentBuildError(
                f"unexpected non-JSON answer from {method} {path} (HTTP {resp.status_code})",
                code="bad_response",
            ) from exc

    async def start(self, /, spec: Mapping[str, Any] | None = None, **fields: Any) -> Build:
        """Create a build from a BuildSpec dict and/or its fields (``steps=[...]``, ``name=``...).

        The fields override the dict's; a single ``steps`` string is one step. Returns the
        build as created (usually ``queued``): :meth:`wait` for its end.
        """
        body = {**(spec or {}), **fields}
        if isinstance(body.get("steps"), str):
            body["steps"] = [body["steps"]]
        return Build(await self._request("POST", "builds", json_body=body))

    async def get(self, build_id: str) -> Build:
        """The build with its whole spec (``spec_complete`` true); :class:`NotFound` if it
        does not exist or belongs to someone else."""
        return Build(await self._request("GET", f"builds/{_bid(build_id)}"))

    async def list(
        self,
        status: str | None = None,
        limit: int = 50,
        before: str | None = None,
        q: str | None = None,
    ) -> BuildList:
        """Newest first, following the ``next`` cursor until ``limit`` builds are collected.

        ``status`` keeps those in one status (or several, comma-separated); ``q`` keeps
        those whose name or id contains it, ignoring case (at most 200 characters). Both
        filter on the server, so they search every build, not only a first page."""
        out: BuildList = []
        cursor = before
        while len(out) < limit:
            page = await self._request(
                "GET",
                "builds",
                params={
                    "status": status,
                    "q": q,
                    "limit": min(limit - len(out), 100),
                    "before": cursor,
                },
            )
            out.extend(Build(b) for b in page.get("builds", []))
            cursor = page.get("next")
            if not cursor or not page.get("builds"):
                break
        return out[:limit]

    async def cancel(self, build_id: str) -> Build:
        """Ask the build to stop; :class:`Conflict` if it has already finished."""
        return Build(await self._request("POST", f"builds/{_bid(build_id)}/cancel"))

    async def delete(self, build_id: str) -> None:
        """Delete the build, its log and its artifacts, stopping it (and its preview) first."""
        await self._request("DELETE", f"builds/{_bid(build_id)}")

    async def artifacts(self, build_id: str) -> RecordList:
        """``[{"path", "size", "sha256"}, ...]``."""
        page = await self._request("GET", f"builds/{_bid(build_id)}/artifacts")
        return [Record(a) for a in page.get("artifacts", [])]

    async def preview_stop(self, build_id: str) -> None:
        """Stop the build's live preview; :class:`Conflict` when none is running."""
        await self._request("POST", f"builds/{_bid(build_id)}/preview/stop")

    async def restart_preview(self, build_id: str) -> Build:
        """Replace the build's running preview process by a fresh one (after editing the
        files it serves, or when it hangs), in the same sandbox and at the same URLs; the
        Build, whose ``preview`` is ``ready`` again or ``failed`` with the error.
        :class:`Conflict` when it has no live preview (``error.code`` says why:
        ``preview_gone`` once it stopped, as its sandbox went with it)."""
        return Build(await self._request("POST", f"builds/{_bid(build_id)}/preview/restart"))

    async def preview_url(self, build_id: str, *, path: bool = False) -> str:
        """The absolute URL of the build's live preview.

        By default the URL a browser opens: the preview on an origin of its own, served at
        ``/`` and authenticated by the URL itself (anyone holding it can use the app; do not
        share it). Servers without an own origin give the path URL instead. ``path=True``:
        always the path proxy ``{base_url}agentbuild/preview/{id}/``, which needs Jupyter
        credentials (send ``self.server.auth_headers()``), for curl-like clients and agents.
        :class:`Conflict` when the build has no live preview (with ``path=True``: no preview
        at all; the path then serves the build's artifacts, if any).
        """
        build = await self.get(build_id)
        return preview_url_of(build, self.server, path=path)

    async def log_page(self, build_id: str, after: int = 0, limit: int = 1000) -> Record:
        """One page: ``{"entries", "last_seq", "done"}``."""
        params = {"after": after, "limit": limit}
        return Record(await self._request("GET", f"builds/{_bid(build_id)}/logs", params=params))

    async def logs(
        self, build_id: str, after: int = 0, follow: bool = False, limit: int = 1000
    ) -> AsyncGenerator[Entry, None]:
        """Entries with ``seq > after``. Without ``follow``, stops at what exists now;
        with ``follow``, streams until the build ends."""
        batches = self.stream(build_id, after) if follow else self.log_pages(build_id, after, limit)
        async for batch in batches:
            for entry in batch:
                yield entry

    async def log_pages(
        self, build_id: str, after: int = 0, limit: int = 1000
    ) -> AsyncGenerator[EntryBatch, None]:
        """What exists now after ``after``, a REST page at a time (a batch per request:
        the blocking client crosses threads once per page, not once per entry)."""
        while True:
            page = await self.log_page(build_id, after, limit)
            entries = page.get("entries") or []
            if entries:
                yield entries
            if not entries or page.get("done") or entries[-1]["seq"] >= int(page["last_seq"]):
                return
            after = int(entries[-1]["seq"])

    async def wait(self, build_id: str, timeout: float | None = None) -> Build:  # noqa: ASYNC109
        """Block until the build has finished; return it whatever its outcome.

        Raises ``TimeoutError`` after ``timeout`` seconds (the build keeps running).
        """
        try:
            async with asyncio.timeout(timeout):
                build = await self.get(build_id)
                polls = 0
                while not build.terminal:
                    async for _ in self.stream(build_id, after=build.last_seq):
                        pass
                    build = await self.get(build_id)
                    if not build.terminal:  # the record can lag the stream for a moment
                        polls += 1
                        await asyncio.sleep(min(0.05 * polls, 1.0))
                return build
        except TimeoutError:
            raise TimeoutError(f"build {build_id} has not finished after {timeout}s") from None

    async def download(self, build_id: str, path: str, dest: str | os.PathLike[str] = ".") -> Path:
        """Save one artifact; ``dest`` is a file name or an existing directory. Returns the file."""
        target = Path(dest)
        if await asyncio.to_thread(target.is_dir):
            target = target / Path(path).name
        url = f"builds/{_bid(build_id)}/artifacts/{quote(path, safe='/')}"
        return await self._save(url, target)

    async def download_all(
        self, build_id: str, dest: str | os.PathLike[str], format: str = "zip"
    ) -> Path:
        """Save all artifacts as one ``zip`` or ``tar.gz`` archive."""
        if format not in ("zip", "tar.gz"):
            raise ValueError("format must be 'zip' or 'tar.gz'")
        target = Path(dest)
        if await asyncio.to_thread(target.is_dir):
            target = target / f"{build_id}-artifacts.{format}"
        return await self._save(f"builds/{_bid(build_id)}/artifacts.{format}", target)

    async def _save(self, url: str, target: Path) -> Path:
        partial = target.with_name(target.name + ".part")
        try:
            async with self._http.stream("GET", url) as resp:
                if resp.status_code >= 400:
                    raise error_from_response(resp.status_code, await resp.aread(), resp.headers)
                handle = await asyncio.to_thread(partial.open, "wb")
                try:
                    async for chunk in resp.aiter_bytes(1 << 16):
                        await asyncio.to_thread(handle.write, chunk)
                finally:
                    await asyncio.to_thread(handle.close)
        except httpx.TransportError as exc:
            await asyncio.to_thread(partial.unlink, True)
            raise ServerUnreachable(f"download from {self.server.url} failed: {exc}") from exc
        except BaseException:
            await asyncio.to_thread(partial.unlink, True)
            raise
        await asyncio.to_thread(partial.replace, target)
        return target

    # -- WebSocket stream -----------------------------------------------------------------

    def _stream_request(self, build_id: str, after: int) -> HTTPRequest:
        query = urlencode({"after": after})
        url = f"{self.server.ws_api_url}builds/{_bid(build_id)}/stream?{query}"
        return HTTPRequest(url, headers=self.server.auth_headers(), connect_timeout=self.timeout)

    async def stream(self, build_id: str, after: int = 0) -> AsyncGenerator[EntryBatch, None]:
        """Batches of entries with ``seq > after``, live, until the build ends.

        A dropped connection is re-opened with ``after=<last seq seen>``: nothing is missed
        and nothing is repeated.
        """
        last = after
        failures = 0
        while True:
            conn: WebSocketClientConnection | None = None
            try:
                conn = await websocket_connect(
                    self._stream_request(build_id, last), max_message_size=MAX_WS_MESSAGE
                )
            except HTTPClientError as exc:
                if exc.code < 500:
                    body = exc.response.body if exc.response is not None else b""
                    raise error_from_response(exc.code, body or b"") from None
            except (TimeoutError, OSError, StreamClosedError):
                pass
            if conn is not None:
                try:
                    while True:
                        message = await conn.read_message()
                        if message is None:
                            break
                        entries = [e for e in json.loads(message) if int(e["seq"]) > last]
                        if entries:
                            last = int(entries[-1]["seq"])
                            failures = 0
                            yield entries
                finally:
                    conn.close()
                if conn.close_code == 1000:
                    return
            failures += 1
            if failures > RECONNECT_ATTEMPTS:
                raise ServerUnreachable(
                    f"lost the log stream of build {build_id} at seq {last} and could not reconnect"
                )
            await asyncio.sleep(min(0.2 * 2 ** (failures - 1), 5.0))

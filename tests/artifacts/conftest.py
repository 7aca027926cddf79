"""Fixtures for the artifact tests: builds that collect, and downloads of any size.

Downloads stream to a file through their own HTTP client (the shared test client keeps
whole bodies in memory and refuses bodies over 100 MB), hashing on the way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.utils import url_path_join
from tornado.httputil import HTTPHeaders
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from jupyter_agentbuild.artifacts.service import ArtifactService
from jupyter_agentbuild.handlers.artifacts import StaticPreviewHandler
from tests.conftest import Api


@dataclass
class Download:
    code: int
    headers: HTTPHeaders
    path: Path
    size: int
    sha256: str

    def json(self) -> Any:
        return json.loads(self.path.read_bytes())


class Http:
    """Raw requests to the test server: any path (no escaping), any size, streamed."""

    def __init__(self, server_client: Any, base_url: str, auth: dict[str, str], tmp: Path):
        self.server_client = server_client
        self.base_url = base_url
        self.auth = auth
        self.tmp = tmp
        self.client = SimpleAsyncHTTPClient(
            force_instance=True, max_body_size=1 << 40, max_buffer_size=1 << 24
        )
        self._n = 0

    def url(self, raw_path: str) -> str:
        """``raw_path`` is appended to the base URL exactly as given (no quoting)."""
        return str(self.server_client.get_url(url_path_join(self.base_url, raw_path)))

    async def get(
        self, raw_path: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> Download:
        self._n += 1
        target = self.tmp / f"download-{self._n}"
        digest = hashlib.sha256()
        size = 0
        with target.open("wb") as out:

            def on_chunk(chunk: bytes) -> None:
                nonlocal size
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)

            resp = await self.client.fetch(
                self.url(raw_path),
                method=method,
                headers={**self.auth, **(headers or {})},
                streaming_callback=on_chunk,
                raise_error=False,
                request_timeout=120,
                follow_redirects=False,
                decompress_response=False,
            )
        return Download(resp.code, resp.headers, target, size, digest.hexdigest())

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def http(
    api: Api,
    http_server_client: Any,
    jp_base_url: str,
    jp_auth_header: dict[str, str],
    tmp_path: Path,
) -> Any:
    client = Http(http_server_client, jp_base_url, jp_auth_header, tmp_path)
    yield client
    client.close()


def artifacts_of(api: Api) -> ArtifactService:
    service = api.app.web_app.settings["agentbuild"].artifacts
    assert service is not None
    return service  # type: ignore[no-any-return]


async def build_and_collect(
    api: Api, steps: list[str], artifacts: dict[str, Any], **extra: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run a build to its end; return (the final Build, its entries)."""
    build = await api.create({"steps": steps, "artifacts": artifacts, **extra})
    entries, code = await api.stream(build["id"])
    assert code == 1000
    return await api.get(build["id"]), entries


def events(entries: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [e["data"] for e in entries if e.get("type") == type_]


def pattern_stream(size: int, line: bytes = b"0123456789abcdef\n") -> AsyncIterator[bytes]:
    """What ``yes 0123456789abcdef | head -c SIZE`` writes, in ~1 MB pieces."""

    async def gen() -> AsyncIterator[bytes]:
        block = line * (1 << 16)
        left = size
        while left > 0:
            piece = block[:left]
            left -= len(piece)
            yield piece

    return gen()


async def pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    async for piece in pattern_stream(size):
        digest.update(piece)
    return digest.hexdigest()


def pattern_slice(start: int, length: int, line: bytes = b"0123456789abcdef\n") -> bytes:
    period = len(line)
    offset = start % period
    reps = (offset + length) // period + 2
    return (line * reps)[offset : offset + length]


@pytest.fixture
def preview(api: Api, jp_base_url: str) -> str:
    """Mount the static preview handler on a test-only route (the preview route itself
    belongs to the live preview proxy, which falls back to the same function)."""
    prefix = url_path_join(jp_base_url, "static-preview-test")
    router = api.app.web_app.wildcard_router
    router.add_rules(
        [(rf"{prefix}/(?P<build_id>[A-Za-z0-9_-]+)/?(?P<path>.*)", StaticPreviewHandler)]
    )
    router.rules.insert(0, router.rules.pop())  # before the server's catch-all 404
    return "static-preview-test"

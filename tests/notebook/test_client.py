"""The Python client: error mapping, and AsyncClient against the real server in-process.

(The blocking ``Client`` is tested from inside a kernel in test_kernel_client.py: called
here it would block the loop the test server runs on.)
"""

from __future__ import annotations

import json
import re
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest

from jupyter_agentbuild.client import (
    AgentBuildError,
    AsyncClient,
    Build,
    ConfigError,
    Conflict,
    Forbidden,
    NotFound,
    QuotaExceeded,
    ServerInfo,
    ServerUnreachable,
    SpecError,
    Unauthorized,
)
from jupyter_agentbuild.client.aio import preview_url_of
from jupyter_agentbuild.client.exceptions import error_from_response, retry_after


def body(code: str, message: str, field: str | None = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if field:
        err["field"] = field
    return json.dumps({"error": err}).encode()


def test_error_mapping() -> None:
    err = error_from_response(400, body("invalid_path", "workspace must be relative", "workspace"))
    assert isinstance(err, SpecError)
    assert (err.code, err.message, err.field, err.status) == (
        "invalid_path",
        "workspace must be relative",
        "workspace",
        400,
    )
    assert isinstance(error_from_response(404, body("not_found", "no such build")), NotFound)
    assert isinstance(error_from_response(409, body("conflict", "finished")), Conflict)
    assert isinstance(error_from_response(401, b""), Unauthorized)
    quota = error_from_response(429, body("quota_exceeded", "slow down"), {"Retry-After": "7"})
    assert isinstance(quota, QuotaExceeded) and retry_after(quota) == 7.0
    assert isinstance(error_from_response(503, body("misconfigured", "E2B key")), ConfigError)
    # jupyter_server's own error body, and a body that is not JSON at all.
    forbidden = error_from_response(403, b'{"message": "Forbidden", "reason": null}')
    assert isinstance(forbidden, Forbidden) and forbidden.message == "Forbidden"
    weird = error_from_response(502, b"<html>bad gateway</html>")
    assert type(weird) is AgentBuildError
    assert (weird.code, weird.message, weird.status) == ("http_502", "HTTP 502", 502)


def test_build_attribute_access() -> None:
    b = Build(id="b1", status="failed", last_seq=9, preview={"state": "ready", "url": "/p/"})
    assert (b.id, b.status, b.last_seq, b.terminal, b.succeeded) == ("b1", "failed", 9, True, False)
    assert b.preview.state == "ready"
    assert json.loads(json.dumps(b))["id"] == "b1"
    with pytest.raises(AttributeError, match="no field 'nope'"):
        _ = b.nope
    assert "b1" in repr(b)


def test_preview_urls_own_origin_path_and_fallbacks() -> None:
    server = ServerInfo("http://127.0.0.1:9999/user/alice/", "tok")
    own = "http://p3-abcdefghijklmnopqrstuvwxyz.localhost:9999/"
    path = "/user/alice/agentbuild/preview/b3/"
    build = Build(id="b3", preview={"state": "ready", "url": own, "path_url": path})
    assert (build.preview_url, build.preview_path_url, build.preview_own_origin) == (
        own,
        path,
        True,
    )
    assert preview_url_of(build, server) == own
    assert preview_url_of(build, server, path=True) == "http://127.0.0.1:9999" + path
    # No usable origin (url left out), or an older server (the path as ``url``): the path.
    for preview in ({"state": "ready", "path_url": path}, {"state": "ready", "url": path}):
        old = Build(id="b3", preview=preview)
        assert not old.preview_own_origin and old.preview_path_url == path
        assert preview_url_of(old, server) == "http://127.0.0.1:9999" + path
    # A server that sends neither: the client knows where the path proxy is.
    bare = Build(id="b3", preview={"state": "starting"})
    assert preview_url_of(bare, server) == "http://127.0.0.1:9999" + path
    # The URL dies with the preview; no preview at all is a Conflict too.
    stopped = Build(id="b3", preview={"state": "stopped", "url": None, "path_url": path})
    assert stopped.preview_url is None and stopped.preview_path_url == path
    with pytest.raises(Conflict, match="stopped") as info:
        preview_url_of(stopped, server)
    assert info.value.code == "no_preview"
    assert preview_url_of(stopped, server, path=True) == "http://127.0.0.1:9999" + path
    with pytest.raises(Conflict, match="has no preview"):
        preview_url_of(Build(id="b3", preview=None), server, path=True)


async def test_unreachable_server_is_a_typed_error() -> None:
    async with AsyncClient("http://127.0.0.1:9/") as client:
        with pytest.raises(ServerUnreachable) as info:
            await client.get("x")
    assert info.value.code == "server_unreachable"


SCRIPT = "echo one; echo two; printf 'three\\n' >&2"


async def test_async_client_round_trip(api: Any, tmp_path: Path) -> None:
    async with AsyncClient() as client:  # found through JPY_AGENTBUILD_URL / _TOKEN
        build = await client.start(name="rt", steps=[SCRIPT])
        assert build.status == "queued" and build.name == "rt"
        batches = [batch async for batch in client.stream(build.id)]
        seqs = [e["seq"] for batch in batches for e in batch]
        assert seqs == list(range(1, len(seqs) + 1))
        final = await client.wait(build.id, timeout=60)
        assert final.status == "succeeded" and final.exit_code == 0
        lines = {e["text"]: e["stream"] async for e in client.logs(build.id) if e["kind"] == "log"}
        assert lines == {"one": "stdout", "two": "stdout", "three": "stderr"}
        paged = [e["seq"] async for e in client.logs(build.id, after=2, limit=2)]
        assert paged == list(range(3, final.last_seq + 1))
        followed = [e["seq"] async for e in client.logs(build.id, after=3, follow=True)]
        assert followed == list(range(4, final.last_seq + 1))
        assert build.id in [b.id for b in await client.list()]
        assert [b.id for b in await client.list(status="succeeded", limit=1)] == [build.id]

        with pytest.raises(Conflict) as conflict:
            await client.cancel(build.id)
        assert conflict.value.status == 409
        await client.delete(build.id)
        with pytest.raises(NotFound) as missing:
            await client.get(build.id)
        assert missing.value.code == "not_found"
        with pytest.raises(NotFound):
            async for _ in client.stream(build.id):
                pass


async def test_preview_url_from_the_server(api: Any) -> None:
    """The own origin for browsers, the path proxy (with the token) for everyone else."""
    serve = "exec python3 -m http.server $PORT --bind 127.0.0.1"
    async with AsyncClient() as client:
        build = await client.start(name="pv", steps=["echo hi > index.html"])
        with pytest.raises(Conflict, match="has no preview"):
            await client.preview_url(build.id)
        build = await client.start(
            name="pv", steps=["echo '<h1>pv</h1>' > index.html"], preview={"command": serve}
        )
        final = await client.wait(build.id, timeout=60)
        assert final.get("preview", {}).get("state") == "ready", final.get("preview")
        own = await client.preview_url(build.id)
        assert re.fullmatch(rf"http://p{build.id}-[a-z2-7]{{26}}\.localhost:\d+/", own), own
        path = await client.preview_url(build.id, path=True)
        assert path == f"{client.server.url}agentbuild/preview/{build.id}/"
        async with httpx.AsyncClient(headers=client.server.auth_headers()) as http:
            page = await http.get(path)
        assert page.status_code == 200 and "<h1>pv</h1>" in page.text
        await client.preview_stop(build.id)
        with pytest.raises(Conflict, match="stopped") as stopped:
            await client.preview_url(build.id)
        assert stopped.value.code == "no_preview"


async def test_async_client_errors_from_the_server(api: Any) -> None:
    async with AsyncClient() as client:
        with pytest.raises(SpecError) as bad:
            await client.start(steps=[])
        assert bad.value.field == "steps" and bad.value.code == "missing_steps"
        with pytest.raises(SpecError) as bad_ws:
            await client.start(steps=["true"], workspace="../etc")
        assert bad_ws.value.field == "workspace"
        with pytest.raises(NotFound):
            await client.download("nope", "a.txt", "x")
        url = client.server.url
    async with AsyncClient(url, token="wrong-token") as intruder:
        with pytest.raises((Unauthorized, Forbidden)):
            await intruder.list()


async def test_wait_timeout_and_cancel(api: Any) -> None:
    async with AsyncClient() as client:
        build = await client.start(steps=["echo started; sleep 30"])
        async with aclosing(client.stream(build.id)) as stream:
            async for batch in stream:
                if any(e["kind"] == "log" for e in batch):
                    break
        with pytest.raises(TimeoutError, match="has not finished"):
            await client.wait(build.id, timeout=0.2)
        cancelled = await client.cancel(build.id)
        assert cancelled.id == build.id
        final = await client.wait(build.id, timeout=60)
        assert final.status == "cancelled"


async def test_download_artifacts(api: Any, tmp_path: Path) -> None:
    import zipfile

    async with AsyncClient() as client:
        build = await client.start(
            steps=["mkdir -p dist/sub && echo hello > dist/a.txt && echo deep > dist/sub/b.txt"],
            artifacts={"paths": ["dist/**"]},
        )
        final = await client.wait(build.id, timeout=60)
        assert final.succeeded
        listed = {a.path: a.size for a in await client.artifacts(build.id)}
        assert listed == {"dist/a.txt": 6, "dist/sub/b.txt": 5}
        saved = await client.download(build.id, "dist/sub/b.txt", tmp_path)
        assert saved == tmp_path / "b.txt" and saved.read_text() == "deep\n"
        named = await client.download(build.id, "dist/a.txt", tmp_path / "renamed.txt")
        assert named.read_text() == "hello\n"
        archive = await client.download_all(build.id, tmp_path)
        with zipfile.ZipFile(archive) as zf:
            assert sorted(zf.namelist()) == ["dist/a.txt", "dist/sub/b.txt"]
        with pytest.raises(NotFound):
            await client.download(build.id, "dist/nope.txt", tmp_path)
        assert not list(tmp_path.glob("*.part"))  # noqa: ASYNC240


class CuttableRelay:
    """A real TCP relay in front of the server whose live connections the test can cut
    (a dropped network link, as far as the client can tell)."""

    def __init__(self, port: int) -> None:
        self.target_port = port
        self.writers: set[Any] = set()
        self.connections = 0
        self.server: Any = None

    async def start(self) -> int:
        import asyncio

        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: Any, writer: Any) -> None:
        import asyncio

        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers |= {writer, up_writer}

        async def pipe(src: Any, dst: Any) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    def close(self) -> None:
        self.cut()
        self.server.close()


async def test_a_dropped_stream_resumes_where_it_stopped(
    api: Any, jp_http_port: int, jp_base_url: str
) -> None:
    """The connection is cut in the middle of a build: the client reconnects with
    ``after=<last seq>`` and the entries it yields have no gap and no repeat."""
    relay = CuttableRelay(jp_http_port)
    port = await relay.start()
    runner = api.app.web_app.settings["agentbuild"].runner
    token = api.app.identity_provider.token
    try:
        async with AsyncClient(f"http://127.0.0.1:{port}{jp_base_url}", token=token) as client:
            build = await client.start(
                steps=["seq 1 3; while [ ! -e go ]; do sleep 0.05; done; seq 4 3000"]
            )
            seqs: list[int] = []
            texts: list[str] = []
            before: int | None = None
            async with aclosing(client.stream(build.id)) as batches:
                async for batch in batches:
                    seqs += [e["seq"] for e in batch]
                    texts += [e["text"] for e in batch if e["kind"] == "log"]
                    if before is None and texts == ["1", "2", "3"]:
                        before = relay.connections
                        relay.cut()  # mid-build: the client is reading, the step waits
                        sandbox = runner.sandbox_of(build.id)
                        assert sandbox is not None
                        sandbox.work.joinpath("go").write_text("")
            assert before is not None and relay.connections > before  # it reconnected
            final = await client.get(build.id)
    finally:
        relay.close()
    assert final.status == "succeeded"
    assert seqs == list(range(1, final.last_seq + 1))
    assert texts == [str(i) for i in range(1, 3001)]

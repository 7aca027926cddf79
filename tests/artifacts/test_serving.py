"""Serving artifacts: confinement, validators, HEAD, deletion, and the static preview."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from tornado.simple_httpclient import HTTPStreamClosedError

from tests.artifacts.conftest import Http, artifacts_of, build_and_collect
from tests.conftest import Api, read_until, statuses

API = "agentbuild/api/builds"
SITE = [
    "mkdir -p site/docs site/assets && echo '<h1>home</h1>' > site/index.html"
    " && echo '<h1>docs</h1>' > site/docs/index.html && echo 'body{}' > site/assets/app.css"
    " && echo 'lost' > site/404.html && echo secret > notes.txt && ln -s /etc/passwd site/pw"
]


@pytest.fixture
def site(api: Api, jp_asyncio_loop: Any) -> dict[str, Any]:
    # a sync fixture (pytest-jupyter runs no async fixtures), on the tests' own loop
    build, _ = jp_asyncio_loop.run_until_complete(build_and_collect(api, SITE, {"paths": ["site"]}))
    assert build["status"] == "succeeded" and build["artifacts"]["count"] == 4
    return build  # type: ignore[no-any-return]


TRAVERSALS = [
    "../../../../../../etc/passwd",
    "site/../notes.txt",
    "site/../../../../etc/passwd",
    "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "site/%2e%2e/notes.txt",
    "site%2f..%2fnotes.txt",
    "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "site/./index.html",
    "site//index.html",
    "site/%00",
    "..%5c..%5cetc%5cpasswd",
    "site/pw",
    "notes.txt",
]


@pytest.mark.parametrize("attempt", TRAVERSALS)
async def test_traversal_is_refused(
    api: Api, http: Http, site: dict[str, Any], attempt: str
) -> None:
    got = await http.get(f"{API}/{site['id']}/artifacts/{attempt}")
    assert got.code in (400, 404), (attempt, got.code)
    body = got.path.read_bytes()
    assert b"root:" not in body and b"secret" not in body
    assert got.json()["error"]["code"] in ("invalid_path", "not_found")


async def test_encoded_dot_dot_is_a_400_with_the_contract_shape(
    http: Http, site: dict[str, Any]
) -> None:
    got = await http.get(f"{API}/{site['id']}/artifacts/%2e%2e/notes.txt")
    assert got.code == 400
    assert got.json() == {
        "error": {
            "code": "invalid_path",
            "message": "the artifact path may not contain '.', '..' or empty segments",
            "field": "path",
        }
    }


async def test_a_symlink_planted_in_the_store_is_not_followed(
    api: Api, http: Http, site: dict[str, Any]
) -> None:
    root = Path(artifacts_of(api).root)
    blob = sorted((root / site["id"]).iterdir())[0]
    blob.unlink()
    os.symlink("/etc/passwd", blob)
    code, manifest, _ = await api.call("GET", f"builds/{site['id']}/artifacts")
    path = manifest["artifacts"][0]["path"]
    got = await http.get(f"{API}/{site['id']}/artifacts/{path}")
    assert got.code == 404 and b"root:" not in got.path.read_bytes()
    # A build directory replaced by a link to elsewhere is not followed either.
    other = root / site["id"]
    moved = root.parent / "moved"
    other.rename(moved)
    os.symlink(moved, other)
    got = await http.get(f"{API}/{site['id']}/artifacts/{manifest['artifacts'][1]['path']}")
    assert got.code == 404


async def test_etag_head_if_range_and_download_name(http: Http, site: dict[str, Any]) -> None:
    url = f"{API}/{site['id']}/artifacts/site/index.html"
    first = await http.get(url)
    tag = first.headers["ETag"]
    again = await http.get(url, {"If-None-Match": tag})
    assert again.code == 304 and again.size == 0
    other = await http.get(url, {"If-None-Match": '"something-else"'})
    assert other.code == 200
    head = await http.get(url, method="HEAD")
    assert head.code == 200 and head.size == 0
    assert head.headers["Content-Length"] == first.headers["Content-Length"]
    assert head.headers["ETag"] == tag
    stale = await http.get(url, {"Range": "bytes=0-3", "If-Range": '"old"'})
    assert stale.code == 200 and stale.size == first.size
    fresh = await http.get(url, {"Range": "bytes=0-3", "If-Range": tag})
    assert fresh.code == 206 and fresh.path.read_bytes() == b"<h1>"
    many = await http.get(url, {"Range": "bytes=0-1,4-5"})
    assert many.code == 200 and many.size == first.size
    named = await http.get(url + "?download=1")
    assert named.headers["Content-Disposition"].startswith('attachment; filename="index.html"')


async def test_not_ready_while_the_build_runs(
    api: Api, http: Http, agentbuild_config: dict[str, Any]
) -> None:
    build = await api.create(
        {"steps": ["while [ ! -e go ]; do sleep 0.05; done"], "artifacts": {"paths": ["**"]}}
    )
    ws = await api.ws_fetch("agentbuild", "api", "builds", build["id"], "stream")

    await read_until(ws, lambda seen: "running" in statuses(seen))
    for path in ["artifacts", "artifacts.zip", "artifacts/x"]:
        got = await http.get(f"{API}/{build['id']}/{path}")
        assert got.code == 409 and got.json()["error"]["code"] == "artifacts_not_ready", path
    work = Path(agentbuild_config["workspace_root"]) / build["id"] / "work"
    work.joinpath("go").write_text("")
    while await ws.read_message() is not None:
        pass
    code, manifest, _ = await api.call("GET", f"builds/{build['id']}/artifacts")
    assert code == 200 and [a["path"] for a in manifest["artifacts"]] == ["go"]


async def test_delete_removes_the_artifacts(api: Api, http: Http, site: dict[str, Any]) -> None:
    store_dir = Path(artifacts_of(api).root) / site["id"]
    assert store_dir.is_dir() and list(store_dir.iterdir())
    code, _, _ = await api.call("DELETE", f"builds/{site['id']}")
    assert code == 204
    assert not store_dir.exists()
    for path in ["artifacts", "artifacts/site/index.html", "artifacts.zip", "artifacts.tar.gz"]:
        got = await http.get(f"{API}/{site['id']}/{path}")
        assert got.code == 404, path


async def test_unknown_archive_format_is_404(http: Http, site: dict[str, Any]) -> None:
    got = await http.get(f"{API}/{site['id']}/artifacts.rar")
    assert got.code == 404


# -- the static preview ------------------------------------------------------------------


async def test_static_preview_serves_the_site(
    http: Http, site: dict[str, Any], preview: str
) -> None:
    base = f"{preview}/{site['id']}"
    root = await http.get(f"{base}/")
    assert root.code == 200 and root.path.read_bytes() == b"<h1>home</h1>\n"
    assert root.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = root.headers["Content-Security-Policy"]
    assert "sandbox allow-scripts" in csp and "allow-same-origin" not in csp
    assert root.headers["X-Content-Type-Options"] == "nosniff"
    bare = await http.get(base)
    assert bare.code == 302 and bare.headers["Location"] == f"{site['id']}/"
    docs = await http.get(f"{base}/docs")
    assert docs.code == 302 and docs.headers["Location"] == "docs/"
    docs = await http.get(f"{base}/docs/")
    assert docs.code == 200 and docs.path.read_bytes() == b"<h1>docs</h1>\n"
    css = await http.get(f"{base}/assets/app.css")
    assert css.code == 200 and css.headers["Content-Type"] == "text/css; charset=utf-8"
    missing = await http.get(f"{base}/nope.html")
    assert missing.code == 404 and missing.path.read_bytes() == b"lost\n"
    for attempt in ["pw", "../notes.txt", "%2e%2e/notes.txt", "docs/../../notes.txt"]:
        got = await http.get(f"{base}/{attempt}")
        body = got.path.read_bytes()
        assert got.code in (400, 404) and b"root:" not in body and b"secret" not in body
    gone = await http.get(f"{preview}/0000000000000000/")
    assert gone.code == 404 and gone.json()["error"]["code"] == "not_found"


async def test_a_blob_gone_mid_download_cuts_the_connection(
    api: Api, http: Http, site: dict[str, Any]
) -> None:
    root = Path(artifacts_of(api).root)
    for blob in (root / site["id"]).iterdir():
        blob.unlink()
    for fmt in ("zip", "tar.gz"):
        # Headers were sent before the first blob was opened: the only honest signal
        # left is an incomplete response, which the client sees as a failed transfer.
        with pytest.raises(HTTPStreamClosedError):
            await http.get(f"{API}/{site['id']}/artifacts.{fmt}")
    one = await http.get(f"{API}/{site['id']}/artifacts/site/index.html")
    assert one.code == 404  # a single file is opened before any header goes out

"""Collection and downloads on a real server with real builds (issue 4's acceptance list).

One build writes what a web project leaves behind: ``dist/``, ``.next/``, ``node_modules/``,
a symlink to ``/etc/passwd`` and a 300 MB file. Its manifest, single-file downloads
(with Range), zip and tar.gz must be byte-correct, keep the build outputs, drop
``node_modules`` and never show the link's target.
"""

from __future__ import annotations

import hashlib
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from jupyter_agentbuild.artifacts import collect
from tests.artifacts.conftest import (
    Http,
    artifacts_of,
    build_and_collect,
    events,
    pattern_sha256,
    pattern_slice,
)
from tests.conftest import Api, statuses

BIG = 300 * 1024 * 1024
API = "agentbuild/api/builds"

WEB_PROJECT = [
    "mkdir -p dist/assets dist/docs .next/static/chunks node_modules/left-pad src .git",
    "echo '<!doctype html><h1>app</h1>' > dist/index.html",
    "echo '<h1>docs</h1>' > dist/docs/index.html",
    "printf 'console.log(1)\\n' > dist/assets/app.js",
    "echo '<svg xmlns=\"http://www.w3.org/2000/svg\"/>' > dist/logo.svg",
    "echo next > .next/static/chunks/main.js && echo abc > .next/BUILD_ID",
    "echo 'module.exports = 1' > node_modules/left-pad/index.js",
    "echo 'ref: refs/heads/main' > .git/HEAD",
    "echo 'export {}' > src/main.ts",
    "ln -s /etc/passwd dist/passwd",
    "ln -s /etc dist/etc",
    "ln -s index.html dist/home.html",
    f"{{ yes 0123456789abcdef || true; }} | head -c {BIG} > dist/big.bin",
]
KEPT = {
    ".next/BUILD_ID",
    ".next/static/chunks/main.js",
    "dist/assets/app.js",
    "dist/big.bin",
    "dist/docs/index.html",
    "dist/index.html",
    "dist/logo.svg",
    "src/main.ts",
}


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def test_build_outputs_are_kept_streamed_and_byte_correct(
    api: Api, http: Http, tmp_path: Path
) -> None:
    build, entries = await build_and_collect(api, [" && ".join(WEB_PROJECT)], {"paths": ["**"]})
    assert build["status"] == "succeeded", build["error"]
    bid = build["id"]

    # The artifacts_ready event comes before the terminal status, and says what was kept.
    kinds = [e.get("type") for e in entries]
    assert kinds.index("artifacts_ready") < len(kinds) - 1 and statuses(entries)[-1] == "succeeded"
    ready = events(entries, "artifacts_ready")[0]
    assert ready["count"] == len(KEPT) and ready["truncated"] is False
    assert ready["links"] == 3
    assert build["artifacts"]["count"] == len(KEPT)

    # The sandbox is gone; what follows is served from the artifact store.
    local = api.app.web_app.settings["agentbuild"].runner.providers["local"]
    assert not (Path(local.workspace_root) / bid).exists()

    code, manifest, _ = await api.call("GET", f"builds/{bid}/artifacts")
    assert code == 200
    by_path = {a["path"]: a for a in manifest["artifacts"]}
    assert set(by_path) == KEPT  # dist and .next kept; node_modules and .git excluded
    assert manifest["total_size"] == sum(a["size"] for a in manifest["artifacts"])
    assert manifest["total_size"] == build["artifacts"]["total_size"]
    assert by_path["dist/big.bin"]["size"] == BIG
    assert by_path["dist/big.bin"]["sha256"] == await pattern_sha256(BIG)
    index = b"<!doctype html><h1>app</h1>\n"
    assert by_path["dist/index.html"] == {
        "path": "dist/index.html",
        "size": len(index),
        "sha256": hashlib.sha256(index).hexdigest(),
    }
    # Links are recorded, never followed; an outside target is not even named.
    assert manifest["links"] == [
        {"path": "dist/etc", "target": None},
        {"path": "dist/home.html", "target": "index.html"},
        {"path": "dist/passwd", "target": None},
    ]
    assert "'/etc" not in str(manifest) and "root:" not in str(manifest)

    # A single file: type, length, ETag, security headers, exact bytes.
    one = await http.get(f"{API}/{bid}/artifacts/dist/index.html")
    assert one.code == 200 and one.path.read_bytes() == index
    assert one.headers["Content-Type"] == "text/html; charset=utf-8"
    assert one.headers["Content-Length"] == str(len(index))
    assert one.headers["ETag"] == f'"{by_path["dist/index.html"]["sha256"]}"'
    assert one.headers["X-Content-Type-Options"] == "nosniff"
    assert one.headers["Content-Security-Policy"].startswith("sandbox")
    svg = await http.get(f"{API}/{bid}/artifacts/dist/logo.svg")
    assert svg.headers["Content-Type"].startswith("image/svg+xml")
    assert svg.headers["Content-Security-Policy"].startswith("sandbox")
    js = await http.get(f"{API}/{bid}/artifacts/dist/assets/app.js")
    assert js.headers["Content-Type"] == "text/javascript; charset=utf-8"

    # The big one, whole and in ranges.
    big = await http.get(f"{API}/{bid}/artifacts/dist/big.bin")
    assert big.code == 200 and big.size == BIG
    assert big.sha256 == by_path["dist/big.bin"]["sha256"]
    assert big.headers["Content-Type"] == "application/octet-stream"
    for header, start, length in [
        ("bytes=0-99", 0, 100),
        ("bytes=100000007-100001030", 100_000_007, 1024),
        ("bytes=-10", BIG - 10, 10),
        (f"bytes={BIG - 5}-", BIG - 5, 5),
        (f"bytes={BIG - 5}-{BIG + 100}", BIG - 5, 5),
    ]:
        part = await http.get(f"{API}/{bid}/artifacts/dist/big.bin", {"Range": header})
        assert part.code == 206, header
        assert part.headers["Content-Range"] == f"bytes {start}-{start + length - 1}/{BIG}"
        assert part.path.read_bytes() == pattern_slice(start, length), header
    unsatisfiable = await http.get(
        f"{API}/{bid}/artifacts/dist/big.bin", {"Range": f"bytes={BIG}-"}
    )
    assert unsatisfiable.code == 416
    assert unsatisfiable.headers["Content-Range"] == f"bytes */{BIG}"

    # zip: stored entries, exact Content-Length, every entry's bytes as in the manifest.
    archive = await http.get(f"{API}/{bid}/artifacts.zip")
    assert archive.code == 200
    assert archive.headers["Content-Type"] == "application/zip"
    assert int(archive.headers["Content-Length"]) == archive.size
    assert bid in archive.headers["Content-Disposition"]
    assert archive.headers["Content-Disposition"].startswith("attachment;")
    with zipfile.ZipFile(archive.path) as zf:
        assert sorted(zf.namelist()) == sorted(KEPT)
        for info in zf.infolist():
            digest = hashlib.sha256()
            with zf.open(info) as member:  # zipfile checks each entry's CRC-32 too
                while chunk := member.read(1 << 20):
                    digest.update(chunk)
            assert digest.hexdigest() == by_path[info.filename]["sha256"], info.filename
            assert info.file_size == by_path[info.filename]["size"]

    # tar.gz: same content, streamed (chunked).
    tgz = await http.get(f"{API}/{bid}/artifacts.tar.gz")
    assert tgz.code == 200 and tgz.headers["Content-Type"] == "application/gzip"
    assert tgz.headers["Content-Disposition"].startswith('attachment; filename="agentbuild-')
    assert f'{bid}.tar.gz"' in tgz.headers["Content-Disposition"]
    seen: dict[str, str] = {}
    with tarfile.open(tgz.path, "r:gz") as tf:
        for member in tf:
            assert member.isfile()
            handle = tf.extractfile(member)
            assert handle is not None
            digest = hashlib.sha256()
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
            seen[member.name] = digest.hexdigest()
            assert member.size == by_path[member.name]["size"]
    assert seen == {path: a["sha256"] for path, a in by_path.items()}

    # Nothing outside the build's artifacts: the links, excluded files, the source tree.
    for path in ["dist/passwd", "dist/etc/passwd", "node_modules/left-pad/index.js", ".git/HEAD"]:
        missing = await http.get(f"{API}/{bid}/artifacts/{path}")
        assert missing.code == 404, path
        assert missing.json()["error"]["code"] == "not_found"


async def test_when_always_collects_after_a_failure_and_success_does_not(api: Api) -> None:
    steps = ["mkdir -p reports && echo '<testsuite/>' > reports/junit.xml && exit 3"]
    failed, entries = await build_and_collect(
        api, steps, {"paths": ["reports/*.xml"], "when": "always"}
    )
    assert failed["status"] == "failed" and failed["exit_code"] == 3
    assert failed["artifacts"]["count"] == 1
    assert events(entries, "artifacts_ready")[0]["count"] == 1
    code, manifest, _ = await api.call("GET", f"builds/{failed['id']}/artifacts")
    assert [a["path"] for a in manifest["artifacts"]] == ["reports/junit.xml"]

    skipped, entries = await build_and_collect(api, steps, {"paths": ["reports"]})
    assert skipped["status"] == "failed" and skipped["artifacts"] is None
    assert events(entries, "artifacts_ready") == []
    code, manifest, _ = await api.call("GET", f"builds/{skipped['id']}/artifacts")
    assert code == 200 and manifest["artifacts"] == [] and manifest["total_size"] == 0


async def test_no_artifacts_spec_collects_nothing(api: Api) -> None:
    build = await api.create({"steps": ["mkdir dist && echo x > dist/a"]})
    entries, _ = await api.stream(build["id"])
    final = await api.get(build["id"])
    assert final["artifacts"] is None and events(entries, "artifacts_ready") == []
    code, manifest, _ = await api.call("GET", f"builds/{build['id']}/artifacts")
    assert code == 200 and manifest["artifacts"] == [] and manifest["count"] == 0


async def test_excludes_override_and_special_files(api: Api) -> None:
    steps = [
        "mkdir -p out/node_modules/x out/maps && echo a > out/a.js && echo m > out/maps/a.js.map"
        " && echo n > out/node_modules/x/i.js && mkfifo out/pipe && printf 'x' > out/$'bad\\xff'"
    ]
    build, entries = await build_and_collect(api, steps, {"paths": ["out"], "exclude": ["*.map"]})
    assert build["status"] == "succeeded", build["error"]
    code, manifest, _ = await api.call("GET", f"builds/{build['id']}/artifacts")
    # An explicit exclude list replaces the defaults: node_modules is kept this time.
    assert [a["path"] for a in manifest["artifacts"]] == ["out/a.js", "out/node_modules/x/i.js"]
    assert {(s["path"], s["reason"]) for s in manifest["skipped"]} == {
        ("out/bad\ufffd", "name_not_utf8"),
        ("out/pipe", "not_a_regular_file"),
    }
    assert events(entries, "artifacts_ready")[0]["skipped"] == 2


async def test_empty_and_long_named_files_archive_correctly(api: Api, http: Http) -> None:
    deep = "/".join(["d" * 60] * 4) + "/" + "é" * 40 + ".txt"  # > 100 bytes: pax headers
    steps = [
        f"mkdir -p site/'{deep.rsplit('/', 1)[0]}' && : > site/empty && echo hi > site/'{deep}'"
    ]
    build, _ = await build_and_collect(api, steps, {"paths": ["site"]})
    code, manifest, _ = await api.call("GET", f"builds/{build['id']}/artifacts")
    assert {a["path"] for a in manifest["artifacts"]} == {"site/empty", f"site/{deep}"}
    empty = await http.get(f"{API}/{build['id']}/artifacts/site/empty")
    assert empty.code == 200 and empty.size == 0 and empty.headers["Content-Length"] == "0"
    from urllib.parse import quote

    named = await http.get(f"{API}/{build['id']}/artifacts/{quote('site/' + deep)}")
    assert named.code == 200 and named.path.read_bytes() == b"hi\n"
    archive = await http.get(f"{API}/{build['id']}/artifacts.zip")
    with zipfile.ZipFile(archive.path) as zf:
        assert {i.filename: zf.read(i) for i in zf.infolist()} == {
            "site/empty": b"",
            f"site/{deep}": b"hi\n",
        }
    tgz = await http.get(f"{API}/{build['id']}/artifacts.tar.gz")
    with tarfile.open(tgz.path, "r:gz") as tf:
        got: dict[str, Any] = {}
        for m in tf:
            handle = tf.extractfile(m)
            assert handle is not None
            got[m.name] = handle.read()
    assert got == {"site/empty": b"", f"site/{deep}": b"hi\n"}


async def test_small_files_share_pack_blobs_and_read_back_exactly(
    api: Api, http: Http, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collect, "PACK_SIZE", 3000)  # many packs
    monkeypatch.setattr(collect, "PACK_BATCH", 1500)  # many batches
    script = (
        "mkdir -p p && for i in $(seq 100 139); do head -c $((i * 7)) /dev/urandom > p/f$i; done"
        " && head -c 70000 /dev/urandom > p/large"
    )
    build, _ = await build_and_collect(api, [script], {"paths": ["p"]})
    bid = build["id"]
    code, manifest, _ = await api.call("GET", f"builds/{bid}/artifacts")
    assert manifest["count"] == 41
    store = Path(artifacts_of(api).root) / bid
    names = sorted(p.name for p in store.iterdir())
    assert len([n for n in names if n.startswith("pack-")]) > 5  # rolled over
    assert len(names) < 41  # small files share blobs; "large" has its own
    by_path = {a["path"]: a for a in manifest["artifacts"]}
    for path in ["p/f100", "p/f117", "p/f139", "p/large"]:
        one = await http.get(f"{API}/{bid}/artifacts/{path}")
        assert one.sha256 == by_path[path]["sha256"] and one.size == by_path[path]["size"]
        tail = await http.get(f"{API}/{bid}/artifacts/{path}", {"Range": "bytes=-5"})
        assert tail.path.read_bytes() == one.path.read_bytes()[-5:]
    archive = await http.get(f"{API}/{bid}/artifacts.zip")
    with zipfile.ZipFile(archive.path) as zf:
        assert {i.filename: hashlib.sha256(zf.read(i)).hexdigest() for i in zf.infolist()} == {
            p: a["sha256"] for p, a in by_path.items()
        }
    tgz = await http.get(f"{API}/{bid}/artifacts.tar.gz")
    with tarfile.open(tgz.path, "r:gz") as tf:
        seen = {}
        for m in tf:
            handle = tf.extractfile(m)
            assert handle is not None
            seen[m.name] = hashlib.sha256(handle.read()).hexdigest()
    assert seen == {p: a["sha256"] for p, a in by_path.items()}


async def test_a_failing_artifact_store_fails_the_build_clearly(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = artifacts_of(api).blobs
    real_open = blobs.open_write
    calls = []

    def open_write(build_id: str, key: str) -> Any:
        calls.append(key)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_open(build_id, key)

    monkeypatch.setattr(blobs, "open_write", open_write)
    steps = ["mkdir out && head -c 200000 /dev/zero > out/a && head -c 200000 /dev/zero > out/b"]
    build, entries = await build_and_collect(api, steps, {"paths": ["out"]})
    assert build["status"] == "failed" and build["exit_code"] == 0
    assert "artifact collection failed" in build["error"] and "No space left" in build["error"]
    assert events(entries, "artifacts_ready") == []
    failed = events(entries, "artifacts_failed")
    assert len(failed) == 1 and "No space left" in failed[0]["error"]
    assert statuses(entries)[-1] == "failed"
    code, manifest, _ = await api.call("GET", f"builds/{build['id']}/artifacts")
    assert code == 200 and manifest["artifacts"] == [] and build["artifacts"] is None
    store = Path(artifacts_of(api).root) / build["id"]
    assert not store.exists()  # nothing half-written is left behind

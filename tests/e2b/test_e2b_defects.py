"""The six ways the E2B provider differed from the local one against a real envd, each
pinned against the (faithful) fake envd: a real Jupyter server, the real SDK in debug mode."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import Api, texts

from .conftest import marked


def events(entries: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [e["data"] for e in entries if e.get("type") == type_]


async def test_a_background_child_does_not_keep_its_step_alive(e2b_api: Api) -> None:
    """envd ends a command only once both pipes close; a step ends when its shell exits
    (as locally), and the child is swept then."""
    build = await e2b_api.create(
        {"steps": ["sleep 15 & echo bg-started", "echo second"], "timeout": 60}
    )
    entries, _ = await e2b_api.stream(build["id"])
    final = await e2b_api.get(build["id"])
    assert final["status"] == "succeeded", final
    assert texts(entries) == ["bg-started", "second"]
    first = events(entries, "step_finished")[0]
    assert first["exit_code"] == 0 and first["duration"] < 5, first
    assert marked(build["id"]) == []


async def test_symlink_targets_are_the_links_text(e2b_api: Api) -> None:
    """envd reports a link's resolved absolute target; the manifest shows the link's own
    text when it stays inside the workspace (as locally), and none when it leaves it."""
    build = await e2b_api.create(
        {
            "steps": [
                "mkdir -p dist/sub && echo a > dist/a.txt && ln -s a.txt dist/rel "
                "&& ln -s ../a.txt dist/sub/up && ln -s /etc/passwd dist/out"
            ],
            "artifacts": {"paths": ["dist/**"]},
        }
    )
    final = await e2b_api.finish(build["id"])
    assert final["status"] == "succeeded", final
    code, listing, _ = await e2b_api.call("GET", f"builds/{build['id']}/artifacts")
    assert code == 200, listing
    links = {link["path"]: link.get("target") for link in listing["links"]}
    assert links == {"dist/rel": "a.txt", "dist/sub/up": "../a.txt", "dist/out": None}


async def test_dangling_links_and_fifos_are_in_the_manifest(e2b_api: Api) -> None:
    """envd gives them no type and the SDK's list drops them; locally they are listed."""
    build = await e2b_api.create(
        {
            "steps": ["mkdir dist && ln -s nowhere dist/dangling && mkfifo dist/fifo"],
            "artifacts": {"paths": ["dist/**"]},
        }
    )
    final = await e2b_api.finish(build["id"])
    assert final["status"] == "succeeded", final
    code, listing, _ = await e2b_api.call("GET", f"builds/{build['id']}/artifacts")
    assert code == 200, listing
    assert [(link["path"], link.get("target")) for link in listing["links"]] == [
        ("dist/dangling", "nowhere")
    ]
    skipped = {s["path"]: s["reason"] for s in listing["skipped"]}
    assert skipped == {"dist/fifo": "not_a_regular_file"}


async def test_a_stopped_step_gets_sigterm_then_its_grace(e2b_api: Api) -> None:
    """kill_grace applies: the trap runs and its output is kept; the step reports the
    signal it was stopped with (-15), not envd's -1."""
    build = await e2b_api.create(
        {
            "steps": [
                {
                    "run": "trap 'echo got-term; sleep 0.2; echo trap-done; exit 3' TERM; "
                    "echo started; sleep 100 & wait",
                    "timeout": 1,
                }
            ]
        }
    )
    entries, _ = await e2b_api.stream(build["id"])
    final = await e2b_api.get(build["id"])
    assert final["status"] == "timed_out"
    assert texts(entries)[:3] == ["started", "got-term", "trap-done"]
    assert events(entries, "step_finished")[0]["exit_code"] == -15
    assert final["exit_code"] == -15
    assert marked(build["id"]) == []


async def test_a_step_ignoring_sigterm_is_killed_after_the_grace(e2b_api: Api) -> None:
    build = await e2b_api.create(
        {"steps": [{"run": "trap '' TERM; echo started; sleep 100", "timeout": 1}]}
    )
    entries, _ = await e2b_api.stream(build["id"])
    final = await e2b_api.get(build["id"])
    assert final["status"] == "timed_out"
    assert events(entries, "step_finished")[0]["exit_code"] == -9
    assert marked(build["id"]) == []


@pytest.fixture
def host_8000() -> Iterator[None]:
    """Something of the Jupyter host's own on port 8000 (what a debug preview without a
    port used to reach)."""

    class Host(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"the jupyter host")

        def log_message(self, *args: Any) -> None:
            pass

    try:
        server = ThreadingHTTPServer(("127.0.0.1", 8000), Host)
    except OSError:
        pytest.skip("port 8000 is taken on this machine")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


async def test_a_debug_preview_without_port_never_reaches_the_host(
    e2b_api: Api, host_8000: None
) -> None:
    app = "import http.server as s, os\n" + (
        "s.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), "
        "s.SimpleHTTPRequestHandler).serve_forever()\n"
    )
    build = await e2b_api.create(
        {
            "steps": ["echo '<p>vm</p>' > index.html"],
            "files": {"app.py": app},
            "preview": {"command": "exec python3 app.py"},
        }
    )
    final = await e2b_api.finish(build["id"])
    assert final["preview"]["state"] == "ready", final["preview"]
    page = await e2b_api.fetch("agentbuild", "preview", build["id"], "index.html")
    assert page.body == b"<p>vm</p>\n"
    code, _, _ = await e2b_api.call("POST", f"builds/{build['id']}/preview/stop")
    assert code == 200


async def test_the_debug_sandbox_is_clean_for_the_next_build(e2b_api: Api) -> None:
    first = await e2b_api.create({"steps": ["echo left > leftover.txt"]})
    assert (await e2b_api.finish(first["id"]))["status"] == "succeeded"
    second = await e2b_api.create({"steps": ["test ! -e leftover.txt; ls -A"]})
    entries, _ = await e2b_api.stream(second["id"])
    assert (await e2b_api.get(second["id"]))["status"] == "succeeded"
    assert texts(entries) == []

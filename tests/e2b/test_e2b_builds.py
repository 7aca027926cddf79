"""Builds on the E2B provider, end to end: a real Jupyter server, the real E2B SDK in
debug mode, and the fake envd (real Connect protocol, real processes) standing for the VM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import Api, read_until, texts
from tests.notebook.serverproc import free_port

from .conftest import KEY, marked
from .fake_envd import FakeEnvd


async def test_steps_run_in_the_vm_with_the_workspace_and_exit_codes(
    fake_e2b_api: Api, fake_envd: FakeEnvd
) -> None:
    e2b_api = fake_e2b_api
    build = await e2b_api.create(
        {
            "steps": [
                "cat hello.txt; echo to-err >&2; printf 'no newline'",
                'echo "secret=$TOKEN"; echo "ci=$CI"; false; echo never',
            ],
            "files": {"hello.txt": "hi from the workspace\n", "sub/dir/x.txt": "x"},
            "env": {"TOKEN": {"value": "hunter2-secret", "secret": True}},
        }
    )
    assert build["provider"] == "e2b"
    entries, code = await e2b_api.stream(build["id"])
    final = await e2b_api.get(build["id"])
    assert code == 1000
    assert final["status"] == "failed" and final["exit_code"] == 1
    assert final["sandbox_id"] == "e2b-debug_sandbox_id" and final["started_at"]
    # stdout and stderr are two pipes: each keeps its order, not their interleaving
    by_stream = {
        name: [e["text"] for e in entries if e.get("stream") == name]
        for name in ("stdout", "stderr")
    }
    assert by_stream == {
        "stdout": ["hi from the workspace", "no newline", "secret=***", "ci=true"],
        "stderr": ["to-err"],
    }
    assert "hunter2-secret" not in json.dumps(entries) + json.dumps(final)
    assert KEY not in json.dumps(final)
    # the debug sandbox (envd on this host, reused by the next build) is wiped afterwards
    assert not fake_envd.host("/home/user/work").exists()
    started = [p for p in fake_envd.processes if "set -eo pipefail" in " ".join(p.args)]
    assert started and all(p.cwd == "/home/user/work" for p in started)


async def test_timeout_and_cancel_leave_no_process_in_the_vm(e2b_api: Api) -> None:
    build = await e2b_api.create(
        # setsid: out of the step's process group, found by the marker sweep only
        {"steps": [{"run": "setsid sleep 300 & sleep 301; echo never", "timeout": 1}]}
    )
    entries, _ = await e2b_api.stream(build["id"])
    final = await e2b_api.get(build["id"])
    assert final["status"] == "timed_out"
    assert marked(build["id"]) == []  # the background `sleep 300` too
    build = await e2b_api.create({"steps": ["echo started; setsid sleep 302 & sleep 303"]})
    ws = await e2b_api.ws_fetch("agentbuild", "api", "builds", build["id"], "stream")
    await read_until(ws, lambda seen: "started" in texts(seen))
    assert marked(build["id"]), "the marker finds the step's processes while they run"
    code, _, _ = await e2b_api.call("POST", f"builds/{build['id']}/cancel")
    assert code == 202
    while await ws.read_message() is not None:
        pass
    assert (await e2b_api.get(build["id"]))["status"] == "cancelled"
    assert marked(build["id"]) == []


async def test_artifacts_are_collected_from_the_vm(e2b_api: Api) -> None:
    build = await e2b_api.create(
        {
            "steps": [
                "mkdir -p dist/deep && printf 'A' > dist/a.txt && head -c 300000 /dev/zero "
                "> dist/deep/big.bin && ln -s /etc/passwd dist/passwd"
            ],
            "artifacts": {"paths": ["dist/**"]},
        }
    )
    final = await e2b_api.finish(build["id"])
    assert final["status"] == "succeeded", final
    code, listing, _ = await e2b_api.call("GET", f"builds/{build['id']}/artifacts")
    assert code == 200, listing
    files = {f["path"]: f["size"] for f in listing["artifacts"]}
    assert files == {"dist/a.txt": 1, "dist/deep/big.bin": 300000}
    assert [link["path"] for link in listing["links"]] == ["dist/passwd"]
    response = await e2b_api.fetch(
        "agentbuild", "api", "builds", build["id"], "artifacts", "dist/deep/big.bin"
    )
    assert response.body == bytes(300000)


async def test_a_preview_runs_in_the_vm_and_is_proxied(
    e2b_api: Api, tmp_path: Path, http_server_client: Any
) -> None:
    app = "import http.server as s, os\n" + (
        "s.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), "
        "s.SimpleHTTPRequestHandler).serve_forever()\n"
    )
    build = await e2b_api.create(
        {
            "steps": ["echo '<h1>from the vm</h1>' > index.html"],
            "files": {"app.py": app},
            "preview": {"command": "exec python3 app.py", "port": free_port()},
        }
    )
    final = await e2b_api.finish(build["id"])
    assert final["preview"]["state"] == "ready", final["preview"]
    page = await e2b_api.fetch("agentbuild", "preview", build["id"], "index.html")
    assert page.body == b"<h1>from the vm</h1>\n"
    assert "sandbox" in page.headers["Content-Security-Policy"]
    # its own origin: the same VM URL and traffic token, the path as it is
    host = final["preview"]["url"].split("://", 1)[1].rstrip("/")
    own = await http_server_client.fetch("/index.html", headers={"Host": host}, raise_error=False)
    assert own.code == 200 and own.body == b"<h1>from the vm</h1>\n"
    assert "Content-Security-Policy" not in own.headers
    code, stopped, _ = await e2b_api.call("POST", f"builds/{build['id']}/preview/stop")
    assert code == 200 and stopped["preview"]["state"] == "stopped"
    assert marked(build["id"]) == []


async def test_a_store_that_stays_down_fails_the_build_clearly(e2b_api: Api) -> None:
    """Our output sink failing (the log store gone) ends the step with that error, not a
    'lost connection to E2B', and the VM's processes are still swept."""
    from sqlalchemy.exc import OperationalError

    settings = e2b_api.app.web_app.settings["agentbuild"]
    runner = settings.runner
    runner.store_retry_timeout = 0.3
    real_append = settings.store.append_chunks

    async def down(build_id: str, chunks: Any) -> None:
        raise OperationalError("INSERT", {}, Exception("connection refused"))

    settings.store.append_chunks = down
    try:
        build = await e2b_api.create({"steps": ["seq 1 1000000; sleep 300"]})
        final = await e2b_api.finish(build["id"])
    finally:
        settings.store.append_chunks = real_append
    assert final["status"] == "failed"
    assert "database" in final["error"], final["error"]
    assert marked(build["id"]) == []


async def test_a_step_whose_wrapper_dies_fails_clearly(e2b_api: Api) -> None:
    """Without its end mark a step's status is unknown: the build fails saying so, never
    succeeds by accident."""
    build = await e2b_api.create({"steps": ["kill -9 $PPID; echo still-here", "echo never"]})
    entries, _ = await e2b_api.stream(build["id"])
    final = await e2b_api.get(build["id"])
    assert final["status"] == "failed", final
    assert "without its exit status" in final["error"]
    assert "never" not in texts(entries)
    assert marked(build["id"]) == []

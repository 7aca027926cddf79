"""Isolated local builds on a real server: what a build can see, reach and leave behind;
the admin's provider allow-list; honest availability; private files.

The local provider runs each step under bubblewrap (Linux namespaces). These tests attack
it the way a hostile build would, and check the outcome from the host."""

from __future__ import annotations

import io
import json
import os
import secrets
import shlex
import stat
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from traitlets.config import Config

from tests.conftest import Api, as_user, multi_user_config, read_until, texts

PY = shlex.quote(sys.executable)
MARKER_VAR = "AGENTBUILD_TEST_SERVER_ONLY"


@pytest.fixture
def server_marker(monkeypatch: pytest.MonkeyPatch) -> str:
    """A variable in the server's environment (set before the server starts)."""
    value = f"server-env-{secrets.token_hex(8)}"
    monkeypatch.setenv(MARKER_VAR, value)
    return value


@pytest.fixture
def jp_server_config(agentbuild_config: dict[str, Any]) -> Config:
    return multi_user_config(agentbuild_config)


async def _running(api: Api, build_id: str, user: str) -> None:
    """Wait (on the build's stream) until its step printed READY."""
    ws = await api.ws_fetch(
        "agentbuild", "api", "builds", build_id, "stream", headers=as_user(user)
    )
    await read_until(ws, lambda seen: "READY" in texts(seen))
    ws.close()


async def _finish(api: Api, build_id: str, user: str) -> tuple[dict[str, Any], list[str]]:
    ws = await api.ws_fetch(
        "agentbuild", "api", "builds", build_id, "stream", headers=as_user(user)
    )
    entries: list[dict[str, Any]] = []
    while (msg := await ws.read_message()) is not None:
        entries.extend(json.loads(msg))
    code, build, _ = await api.call("GET", f"builds/{build_id}", headers=as_user(user))
    assert code == 200
    return build, texts(entries)


async def test_a_snooping_build_sees_no_secret(
    server_marker: str,
    api: Api,
    jp_runtime_dir: Path,
    jp_data_dir: Path,
    jp_config_dir: Path,
    agentbuild_config: dict[str, Any],
) -> None:
    app = api.app
    token = app.identity_provider.token
    cookie_secret = app.cookie_secret
    assert token and cookie_secret
    secret_file = Path(jp_runtime_dir) / "jupyter_cookie_secret"
    home_secret = f"home-file-{secrets.token_hex(8)}"
    (Path.home() / "notes.txt").write_text(home_secret)
    db_secret = f"db-row-{secrets.token_hex(8)}"
    alice_secret = f"alice-ws-{secrets.token_hex(8)}"
    bob_secret = f"bob-ws-{secrets.token_hex(8)}"
    # another user's build and the same user's other build, both running meanwhile
    others = {}
    for user, secret in (("alice", alice_secret), ("bob", bob_secret)):
        code, build, _ = await api.call(
            "POST",
            "builds",
            {
                "name": db_secret,
                "files": {"secret.txt": secret},
                "steps": ["echo READY; sleep 300"],
            },
            headers=as_user(user),
        )
        assert code == 201, build
        await _running(api, build["id"], user)
        others[user] = build["id"]
    sandboxes = Path(agentbuild_config["workspace_root"])
    db_path = Path(agentbuild_config["db_url"].split("///", 1)[1])
    assert (sandboxes / others["alice"] / "work" / "secret.txt").read_text() == alice_secret
    assert _exists(db_path) and _exists(Path.home() / "notes.txt")
    places = [
        str(jp_runtime_dir),
        str(jp_data_dir),
        str(jp_config_dir),
        str(Path.home()),
        str(sandboxes),
        str(sandboxes / others["alice"]),
        str(sandboxes / others["bob"]),
        str(db_path.parent),
        str(app.root_dir),
    ]
    snoop = (
        "set +e +o pipefail\n"
        "echo OWN $(cat mine.txt)\n"
        "env; ls -la / /proc\n"
        "cat /proc/*/environ /proc/*/cmdline 2>/dev/null | tr '\\0' '\\n'\n"
        f"for d in {' '.join(shlex.quote(p) for p in places)}; do\n"
        '  ls -laR "$d" 2>&1 | head -200; grep -rIa . "$d" 2>/dev/null | head -200\n'
        "done\n"
        f"cat {shlex.quote(str(secret_file))} {shlex.quote(str(db_path))} 2>&1 | head -c 20000\n"
        # every name the secrets have, anywhere but the big system and source trees
        "find / -xdev \\( -path /usr -o -path /work -o -path /proc \\) -prune -o \\( "
        "-name 'jupyter_cookie_secret' -o -name 'jpserver-*' -o -name 'agentbuild.db*' "
        "-o -name 'secret.txt' -o -name 'notes.txt' \\) -print 2>/dev/null "
        '| while read -r f; do echo FOUND $f; head -c 2000 "$f"; echo; done\n'
        "grep -rIas -e alice-ws -e bob-ws -e server-env /tmp /var/tmp /dev/shm /run /etc "
        "/home /root /srv /opt /mnt 2>/dev/null | head -50\n"
        "echo SNOOPED\n"
    )
    code, build, _ = await api.call(
        "POST",
        "builds",
        {"files": {"mine.txt": "own-file"}, "steps": [snoop], "timeout": 240},
        headers=as_user("bob"),
    )
    assert code == 201, build
    final, lines = await _finish(api, build["id"], "bob")
    assert final["status"] == "succeeded", final
    output = "\n".join(lines)
    # the snoop really ran and reads what is its own
    assert "OWN own-file" in output and "SNOOPED" in output
    assert "bin" in output and "usr" in output
    for secret in (
        token,
        cookie_secret.decode("ascii", "replace") if isinstance(cookie_secret, bytes) else "",
        secret_file.read_text().strip(),
        server_marker,
        home_secret,
        db_secret,
        alice_secret,
        bob_secret,
    ):
        assert secret and secret not in output, secret[:12]
    for user, build_id in others.items():
        code, _, _ = await api.call("POST", f"builds/{build_id}/cancel", headers=as_user(user))
        assert code == 202


def _daemon_processes(marker: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if marker in " ".join(proc.info["cmdline"] or []):
            found.append(proc.pid)
    return found


async def test_a_double_forked_daemon_dies_with_its_build(
    api: Api, agentbuild_config: dict[str, Any]
) -> None:
    marker = f"agentbuild-daemon-{secrets.token_hex(6)}"
    daemon = (
        "import os, sys, time\n"
        "if os.fork(): sys.exit(0)\n"
        "os.setsid()\n"
        "if os.fork(): sys.exit(0)\n"
        "os.chdir('/')\n"
        "for fd in (0, 1, 2): os.close(fd)\n"
        # no environment either: nothing left to recognise it by but its pid namespace
        f"os.execve('/bin/bash', ['bash', '-c', 'sleep 1000; :', {marker!r}], {{}})\n"
    )
    spec = {
        "files": {"daemon.py": daemon},
        "steps": [
            f"{PY} daemon.py; while ! grep -qs {marker} /proc/[0-9]*/cmdline; do sleep 0.05; done;"
            " echo daemon running; while [ ! -e go ]; do sleep 0.05; done"
        ],
    }
    code, build, _ = await api.call("POST", "builds", spec, headers=as_user("bob"))
    assert code == 201, build
    ws = await api.ws_fetch(
        "agentbuild", "api", "builds", build["id"], "stream", headers=as_user("bob")
    )
    await read_until(ws, lambda s: "daemon running" in texts(s))
    ws.close()
    assert _daemon_processes(marker), "the daemon runs, seen from the host"
    _touch(Path(agentbuild_config["workspace_root"]) / build["id"] / "work" / "go")
    final, _ = await _finish(api, build["id"], "bob")
    assert final["status"] == "succeeded" and final["exit_code"] == 0, final
    assert _daemon_processes(marker) == [], "the daemon outlived its build"


def _touch(path: Path) -> None:
    path.write_text("")


async def test_network_false_cannot_connect_even_to_jupyter(api: Api, jp_http_port: int) -> None:
    probe = (
        "import socket\n"
        f"for host, port in [('127.0.0.1', {jp_http_port}), ('1.1.1.1', 443)]:\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=3).close()\n"
        "        print('CONNECTED', port)\n"
        "    except OSError as exc:\n"
        "        print('REFUSED', port, type(exc).__name__)\n"
    )
    results = {}
    for network in (True, False):
        spec = {"files": {"probe.py": probe}, "steps": [f"{PY} probe.py"], "network": network}
        code, build, _ = await api.call("POST", "builds", spec, headers=as_user("bob"))
        assert code == 201, build
        assert build["spec"].get("network", True) is network
        final, lines = await _finish(api, build["id"], "bob")
        assert final["status"] == "succeeded", (final, lines)
        results[network] = lines
    assert f"CONNECTED {jp_http_port}" in results[True], "control: with network it connects"
    assert any(line.startswith(f"REFUSED {jp_http_port}") for line in results[False])
    assert not any(line.startswith("CONNECTED") for line in results[False]), results[False]
    # a preview cannot be reached without network: refused up front, nothing runs
    spec = {"steps": ["true"], "network": False, "preview": {"command": "sleep 100"}}
    code, body, _ = await api.call("POST", "builds", spec, headers=as_user("bob"))
    assert code == 400 and body["error"]["field"] == "network", body
    code, page, _ = await api.call("GET", "builds", headers=as_user("bob"))
    assert len(page["builds"]) == 2


def _wheel(directory: Path, value: str) -> Path:
    """A minimal pure-Python wheel of package ``agentbuild_demo``."""
    name = "agentbuild_demo-1.0"
    files = {
        "agentbuild_demo/__init__.py": f"VALUE = {value!r}\n",
        f"{name}.dist-info/METADATA": "Metadata-Version: 2.1\nName: agentbuild-demo\nVersion: 1.0\n",
        f"{name}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{name}.dist-info/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, text in {**files, f"{name}.dist-info/RECORD": record}.items():
            zf.writestr(path, text)
    path = directory / f"{name}-py3-none-any.whl"
    path.write_bytes(buf.getvalue())
    return path


async def test_a_real_build_installs_runs_collects_and_previews(
    api: Api, jp_root_dir: Path, agentbuild_config: dict[str, Any]
) -> None:
    ws_dir = Path(jp_root_dir) / "project"
    ws_dir.mkdir()
    wheel = _wheel(ws_dir, "from the wheel")
    steps = [
        f"{PY} -m pip install --no-index --no-deps --no-cache-dir --target lib ./{wheel.name}",
        # plain `python`: the server's interpreter, though its home (and shims) are hidden
        "PYTHONPATH=lib python -c 'import agentbuild_demo; print(agentbuild_demo.VALUE)'"
        " | tr a-z A-Z | sed 's/^/got: /'",
        "mkdir -p dist && seq 1 5 | awk '{s += $1} END {print s}' > dist/sum.txt && echo '<h1>hi</h1>' > "
        "dist/index.html",
    ]
    spec = {
        "workspace": "project",
        "steps": steps,
        "artifacts": {"paths": ["dist/**"]},
        "preview": {
            "command": f"cd dist && exec {PY} -m http.server --bind 127.0.0.1 $PORT",
            "path": "/",
        },
    }
    code, build, _ = await api.call("POST", "builds", spec, headers=as_user("bob"))
    assert code == 201, build
    final, lines = await _finish(api, build["id"], "bob")
    assert final["status"] == "succeeded", (final, lines[-20:])
    assert "got: FROM THE WHEEL" in lines
    code, arts, _ = await api.call("GET", f"builds/{build['id']}/artifacts", headers=as_user("bob"))
    assert code == 200
    assert {a["path"] for a in arts["artifacts"]} == {"dist/sum.txt", "dist/index.html"}
    resp = await api.fetch(
        "agentbuild", "preview", build["id"], "sum.txt", headers=as_user("bob"), method="GET"
    )
    assert resp.code == 200 and resp.body.strip() == b"15"
    assert not (ws_dir / "lib").exists(), "the workspace on the host is untouched"
    # the files are private: database, WAL, sandboxes, artifacts
    db = Path(agentbuild_config["db_url"].split("///", 1)[1])
    sandboxes = Path(agentbuild_config["workspace_root"])
    artifacts_root = Path(api.app.web_app.settings["agentbuild"].artifacts.blobs.root)
    blobs = _files(artifacts_root / build["id"])
    assert blobs
    modes = {
        db: 0o600,
        Path(f"{db}-wal"): 0o600,
        sandboxes: 0o700,
        sandboxes / build["id"]: 0o700,
        artifacts_root: 0o700,
        artifacts_root / build["id"]: 0o700,
        **dict.fromkeys(blobs, 0o600),
    }
    assert {path: _mode(path) for path in modes} == modes


def _exists(path: Path) -> bool:
    return path.exists()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.is_dir() else []


async def test_info_tells_what_each_provider_can_do(api: Api) -> None:
    code, info, _ = await api.call("GET", "info", headers=as_user("bob"))
    assert code == 200, info
    by_name = {p["name"]: p for p in info["providers"]}
    assert info["default_provider"] == "local"
    assert by_name["local"]["available"] and by_name["local"]["isolated"]
    assert by_name["local"]["network_off"]
    assert not by_name["process"]["available"]
    assert "allow_unisolated" in by_name["process"]["detail"]
    assert not by_name["e2b"]["available"] and by_name["e2b"]["isolated"] is False
    code, body, _ = await api.call("POST", "info", {}, headers=as_user("bob"))
    assert code in (404, 405) and "error" in body


# --------------------------------------------------------------------------- admins choose


@pytest.fixture
def allowed_only_local(agentbuild_config: dict[str, Any]) -> None:
    agentbuild_config["allowed_providers"] = ["local"]
    agentbuild_config["allow_unisolated"] = True  # "process" works, but is not allowed


async def test_a_disallowed_provider_is_refused_and_nothing_runs(
    allowed_only_local: None, api: Api, agentbuild_config: dict[str, Any]
) -> None:
    for provider in ("process", "e2b"):
        spec = {"provider": provider, "steps": ["touch /tmp/ran"]}
        code, body, _ = await api.call("POST", "builds", spec, headers=as_user("bob"))
        assert code == 400, body
        assert body["error"]["code"] == "provider_not_allowed"
        assert body["error"]["field"] == "provider"
    code, page, _ = await api.call("GET", "builds", headers=as_user("bob"))
    assert page["builds"] == []
    sandboxes = Path(agentbuild_config["workspace_root"])
    assert [p for p in _files(sandboxes) if not p.name.startswith(".")] == []
    code, info, _ = await api.call("GET", "info", headers=as_user("bob"))
    assert info["allowed_providers"] == ["local"]
    assert {p["name"]: p["allowed"] for p in info["providers"]} == {
        "local": True,
        "process": False,
        "e2b": False,
    }


# --------------------------------------------------------------------------- no namespaces


@pytest.fixture
def no_namespaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A ``bwrap`` that fails as it does in a container forbidding user namespaces."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    bwrap = fake / "bwrap"
    bwrap.write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n"
    )
    bwrap.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    yield


async def test_without_namespaces_local_builds_are_refused(no_namespaces: None, api: Api) -> None:
    code, info, _ = await api.call("GET", "info", headers=as_user("bob"))
    local = {p["name"]: p for p in info["providers"]}["local"]
    assert not local["available"] and "No permissions" in local["detail"]
    code, body, _ = await api.call("POST", "builds", {"steps": ["true"]}, headers=as_user("bob"))
    assert code == 400 and body["error"]["code"] == "provider_unavailable", body
    assert "allow_unisolated" in body["error"]["message"]
    code, page, _ = await api.call("GET", "builds", headers=as_user("bob"))
    assert page["builds"] == []


@pytest.fixture
def unisolated_opt_in(no_namespaces: None, agentbuild_config: dict[str, Any]) -> None:
    agentbuild_config["allow_unisolated"] = True


async def test_the_admin_can_opt_in_to_unisolated_builds(unisolated_opt_in: None, api: Api) -> None:
    code, info, _ = await api.call("GET", "info", headers=as_user("bob"))
    local = {p["name"]: p for p in info["providers"]}["local"]
    assert local["available"] and not local["isolated"] and "UNISOLATED" in local["detail"]
    code, build, _ = await api.call(
        "POST", "builds", {"steps": ["echo plain"]}, headers=as_user("bob")
    )
    assert code == 201, build
    final, lines = await _finish(api, build["id"], "bob")
    assert final["status"] == "succeeded" and lines == ["plain"]
    spec = {"steps": ["true"], "network": False}
    code, body, _ = await api.call("POST", "builds", spec, headers=as_user("bob"))
    assert code == 400 and body["error"]["code"] == "network_unsupported", body

"""The local providers around the steps, with real processes: reaping what a dead server
left, the workspace copy and inline files, the steps' environment, the preview process's
port, and the isolated provider's limits and view of the host."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from jupyter_agentbuild.sandbox import LocalSandboxProvider, SandboxError
from jupyter_agentbuild.sandbox.isolated_provider import IsolatedLocalProvider

from .helpers import (
    PY,
    Collector,
    create_time,
    exists,
    group_members,
    is_dir,
    is_running,
    isolated_provider,
    kill_quietly,
    make,
    pid_running,
    wait_until,
)

# --------------------------------------------------------------------------- reap


HELPER = Path(__file__).with_name("reap_helper.py")


def _killed_server(root: Path) -> dict[str, Any]:
    """Run :mod:`reap_helper` (a server that starts a step) and kill it with -9 once the
    step runs; its report (sandbox id, state, pids)."""
    repo = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    helper = subprocess.Popen(
        [sys.executable, str(HELPER), str(root)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": pythonpath},
        text=True,
    )
    try:
        assert helper.stdout is not None
        report: dict[str, Any] = json.loads(helper.stdout.readline())
        return report
    finally:
        helper.kill()
        helper.wait()


async def test_reap_after_the_server_was_killed(tmp_path: Path) -> None:
    """A server that dies with -9 leaves a step running; a new process reaps it."""
    root = tmp_path / "sandboxes"
    report = await asyncio.to_thread(_killed_server, root)
    state, pids = report["state"], report["pids"]
    pgid = state["pgids"][0][0]
    members = group_members(pgid)
    assert pgid in members and len(members) >= 2  # the leader and `sleep 1000 &`
    victims = {pid: create_time(pid) for pid in [*members, pids["sid"]]}
    assert all(is_running(pid, ct) for pid, ct in victims.items()), "the step outlived its server"

    provider = LocalSandboxProvider(workspace_root=str(root))
    assert await provider.reap(report["sandbox_id"], state) is True
    assert group_members(pgid) == []
    assert not any(is_running(pid, ct) for pid, ct in victims.items())
    assert is_dir(state["dir"]), "reap kills; the files stay"
    assert await provider.remove(report["sandbox_id"], state) is True
    assert not exists(state["dir"])
    await provider.remove("local-x", {**state, "dir": str(tmp_path)})
    assert is_dir(tmp_path), "only a sandbox dir under workspace_root is ever removed"


def _spawn_group(tmp_path: Path, inside: Path) -> tuple[subprocess.Popen[str], int, int]:
    """A leader with two children in its group: one with cwd inside ``inside``, one not."""
    inside.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    leader = subprocess.Popen(
        [
            "bash",
            "-c",
            f"cd {shlex.quote(str(inside))} && sleep 1000 & echo $!; "
            f"cd {shlex.quote(str(tmp_path))} && sleep 1000 & echo $!; exec sleep 1000",
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
        text=True,
    )
    assert leader.stdout is not None
    a = int(leader.stdout.readline())
    b = int(leader.stdout.readline())
    leader.stdout.close()
    return leader, a, b


async def test_reap_guards_against_pid_reuse(tmp_path: Path) -> None:
    sandbox_dir = tmp_path / "sandboxes" / "gone"
    leader, inside, outside = _spawn_group(tmp_path, sandbox_dir / "work")
    pgid = leader.pid
    pids = (pgid, inside, outside)
    provider = LocalSandboxProvider(workspace_root=str(tmp_path / "sandboxes"))
    leader_time = create_time(pgid)
    base = {"dir": str(sandbox_dir), "host": socket.gethostname()}
    try:
        await wait_until(
            lambda: (
                psutil.Process(inside).cwd() == str(sandbox_dir / "work")
                and psutil.Process(outside).cwd() == str(tmp_path)
            ),
            "the children to settle",
        )
        # another host's state: nothing is touched, and the caller is told so
        elsewhere = {**base, "host": "elsewhere", "pgids": [[pgid, leader_time]]}
        assert await provider.reap("local-gone", elsewhere) is False
        assert await provider.remove("local-gone", elsewhere) is False
        assert sandbox_dir.is_dir()
        # garbage never raises
        await provider.reap("local-gone", {"pgids": [["x"], None, [1, 0]], "host": base["host"]})
        await provider.reap("local-gone", {})
        # the leader's create time does not match (its pid was reused): only
        # members whose cwd is inside the sandbox dir are killed
        await provider.reap("local-gone", {**base, "pgids": [[pgid, leader_time + 1000]]})
        assert is_running(pgid) and is_running(outside)
        assert not is_running(inside)
        # the real leader: the whole group goes
        await provider.reap("local-gone", {**base, "pgids": [[pgid, leader_time]]})
        await wait_until(lambda: group_members(pgid) == [], "the group to die")
    finally:
        for pid in pids:
            kill_quietly(pid)
        leader.wait()


# --------------------------------------------------------------------------- files


async def test_workspace_copy_keeps_in_tree_links_and_drops_escapes(
    provider: LocalSandboxProvider, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    (ws / "a.txt").write_text("A")
    (ws / "sub" / "b.txt").write_text("B")
    (ws / "run.sh").write_text("#!/bin/sh\necho run\n")
    (ws / "run.sh").chmod(0o755)
    os.symlink("sub/b.txt", ws / "rel_link")
    os.symlink(ws / "sub", ws / "abs_in_tree")
    os.symlink("/etc/passwd", ws / "passwd")
    os.symlink("..", ws / "up")
    os.symlink("sub/../../outside", ws / "sneaky")
    os.symlink("missing-target", ws / "dangling")
    os.mkfifo(ws / "fifo")

    sandbox = await make(provider, workspace=ws)
    work = sandbox.work
    assert (work / "a.txt").read_text() == "A"
    assert (work / "sub" / "b.txt").read_text() == "B"
    assert os.access(work / "run.sh", os.X_OK)
    assert (work / "rel_link").is_symlink() and (work / "rel_link").read_text() == "B"
    link = (work / "abs_in_tree").readlink()
    assert not link.is_absolute(), "an in-tree absolute link points into the copy"
    assert (work / "abs_in_tree").resolve() == work / "sub"
    assert (work / "dangling").is_symlink()
    names = {p.name for p in work.iterdir()}
    assert not names & {"passwd", "up", "sneaky", "fifo"}, names
    out = Collector()
    result = await sandbox.run_step(
        "./run.sh; cat rel_link; echo; echo new > abs_in_tree/new.txt; cat passwd",
        step=0,
        timeout=30,
        on_output=out,
    )
    assert result.exit_code == 1
    assert out.lines["stdout"] == ["run", "B"]
    assert (work / "sub" / "new.txt").exists()
    assert not (ws / "sub" / "new.txt").exists(), "the original workspace is untouched"
    await sandbox.destroy()


async def test_workspace_holding_the_sandboxes_is_not_copied_into_itself(tmp_path: Path) -> None:
    """Workspace ``.`` = home, sandboxes under ``~/.local/share/jupyter``: no recursion."""
    home = tmp_path / "home"
    (home / "project").mkdir(parents=True)
    (home / "project" / "main.py").write_text("print(1)")
    provider = LocalSandboxProvider(workspace_root=str(home / ".local" / "sandboxes"))

    first = await provider.create("one", workspace=home, files={}, env={})
    second = await provider.create("two", workspace=home, files={}, env={})
    assert (second.work / "project" / "main.py").read_text() == "print(1)"
    assert (second.work / ".local").is_dir()
    assert not (second.work / ".local" / "sandboxes").exists()
    await first.destroy()
    await second.destroy()


async def test_inline_files_written_and_confined(
    provider: LocalSandboxProvider, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, ws / "esc")
    os.symlink("sub", ws / "lnk")

    sandbox = await make(
        provider,
        workspace=ws,
        files={"deep/er/f.txt": "héllo\n", "esc/x.txt": "x", "lnk/y.txt": "y", "./z": "z"},
    )
    work = sandbox.work
    assert (work / "deep" / "er" / "f.txt").read_text() == "héllo\n"
    assert (work / "esc" / "x.txt").read_text() == "x" and not (work / "esc").is_symlink()
    assert not (outside / "x.txt").exists()
    assert (work / "sub" / "y.txt").read_text() == "y"
    assert (work / "z").read_text() == "z"
    await sandbox.destroy()

    for i, bad in enumerate(["../x", "/etc/x", "a/../../x", "", ".", "a/\x00"]):
        with pytest.raises(SandboxError):
            await make(provider, build_id=f"bad{i}", files={bad: "nope"})
        assert not (provider.root / f"bad{i}").exists(), "cleaned up"
    assert not (tmp_path / "sandboxes" / "x").exists()
    assert not (tmp_path / "x").exists()


async def test_create_rejects_bad_ids_and_reuse(provider: LocalSandboxProvider) -> None:
    for bad in ["", "..", "a/b", "../x", ".hidden", "x" * 200]:
        with pytest.raises(SandboxError):
            await make(provider, build_id=bad)
    sandbox = await make(provider, build_id="same")
    with pytest.raises(SandboxError):
        await make(provider, build_id="same")
    with pytest.raises(SandboxError):
        await make(provider, build_id="other", workspace=provider.root / "nope")
    await sandbox.destroy()


# --------------------------------------------------------------------------- env


async def test_step_env_has_no_server_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    secrets = {
        "JUPYTER_TOKEN": "tok",
        "E2B_API_KEY": "e2b_secret",
        "JPY_API_TOKEN": "jpy",
        "JUPYTERHUB_API_TOKEN": "hub",
        "AGENTBUILD_DB_URL": "postgresql://secret",
        "UNLISTED_VARIABLE": "server-only",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LANG", "C.UTF-8")
    passthrough = ("PATH", "LANG", "JUPYTER_TOKEN", "E2B_API_KEY")  # secrets refused
    root = tmp_path / "sandboxes"
    provider = (
        LocalSandboxProvider(workspace_root=str(root), env_passthrough=passthrough)
        if kind == "process"
        else isolated_provider(root, env_passthrough=passthrough)
    )

    sandbox = await make(provider, build_id="envb", env={"FOO": "bar", "BOTH": "build"})
    out = Collector()
    result = await sandbox.run_step(
        "env", step=0, timeout=30, on_output=out, env={"BOTH": "step", "ONLY": "call"}
    )
    assert result.exit_code == 0
    env = dict(line.split("=", 1) for line in out.lines["stdout"] if "=" in line)
    for key in secrets:
        assert key not in env, key
    assert env["FOO"] == "bar"
    assert env["BOTH"] == "step" and env["ONLY"] == "call"
    assert env["HOME"] == str(sandbox.dir)
    assert env["CI"] == "true" and env["AGENTBUILD_BUILD_ID"] == "envb"
    path = os.environ["PATH"]
    bindir = os.path.dirname(sys.executable)
    if kind == "isolated" and bindir not in path.split(os.pathsep):
        path = f"{bindir}{os.pathsep}{path}"  # the server's Python, its shims hidden
    assert env["PATH"] == path and env["LANG"] == "C.UTF-8"
    with pytest.raises(SandboxError):
        await sandbox.run_step("true", step=1, timeout=5, on_output=out, env={"A=B": "x"})
    await sandbox.destroy()


# --------------------------------------------------------------------------- service


async def test_service_port_primitive(provider: LocalSandboxProvider) -> None:
    sandbox = await make(provider, files={"index.html": "hello preview"})
    out = Collector()
    url = await sandbox.start_preview_process(
        f"exec {PY} -m http.server --bind 127.0.0.1 $PORT",
        ready_timeout=20,
        on_output=out,
    )
    assert url.startswith("http://127.0.0.1:")
    assert sandbox.preview_running()
    [[pgid, _]] = sandbox.state()["pgids"]

    def fetch() -> bytes:
        with urllib.request.urlopen(url + "/index.html", timeout=10) as resp:
            return resp.read()  # type: ignore[no-any-return]

    assert await asyncio.to_thread(fetch) == b"hello preview"
    # a step's end kills its own leftovers, not the service that shares its marker
    steps_out = Collector()
    result = await sandbox.run_step(
        "setsid sleep 1000 & echo sid $!", step=0, timeout=30, on_output=steps_out
    )
    assert result.exit_code == 0 and not pid_running(sandbox, steps_out.value("sid"))
    assert sandbox.preview_running() and group_members(pgid) != []
    assert await asyncio.to_thread(fetch) == b"hello preview"
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(SandboxError, match="already"):
        await sandbox.start_preview_process("sleep 1000", port=port)
    await sandbox.stop_preview_process()
    assert group_members(pgid) == [] and sandbox.state()["pgids"] == []
    assert not sandbox.preview_running()
    # taken port, early exit
    with pytest.raises(SandboxError, match="in use"):
        await sandbox.start_preview_process("sleep 1000", port=_listening_port())
    with pytest.raises(SandboxError, match="exited with status 3"):
        await sandbox.start_preview_process("exit 3", ready_timeout=20)
    await sandbox.destroy()


_held: list[socket.socket] = []


def _listening_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    _held.append(sock)
    port: int = sock.getsockname()[1]
    return port


# --------------------------------------------------------------------------- limits


async def test_isolated_steps_have_limits_they_cannot_raise(tmp_path: Path) -> None:
    provider = isolated_provider(
        tmp_path / "sandboxes",
        kill_grace=1.0,
        max_processes=300,
        max_memory=256 * 1024**2,
        max_file_size=1024**2,
    )
    assert (await provider.check()).isolated

    sandbox = await provider.create("limits", workspace=None, files={}, env={})
    cases = [
        ("ulimit -u; ulimit -d; ulimit -f", 0, ["300", str(256 * 1024), "1024"]),
        ("head -c 1000000 /dev/zero > ok.bin; echo small ok", 0, ["small ok"]),
        ("head -c 2000000 /dev/zero > big.bin", 128 + signal.SIGXFSZ, []),  # head killed
        (f"{PY} -c 'b = bytearray(512 * 1024 * 1024)'", 1, []),  # MemoryError
        ("ulimit -f unlimited", 1, []),  # hard limits: no raising them again
    ]
    for step, (cmd, code, stdout) in enumerate(cases):
        out = Collector()
        result = await sandbox.run_step(cmd, step=step, timeout=30, on_output=out)
        assert result.exit_code == code, (cmd, result)
        assert out.lines["stdout"] == stdout, (cmd, out.lines)
    assert (sandbox.work / "big.bin").stat().st_size == 1024**2
    await sandbox.destroy()


async def test_what_an_isolated_step_sees(tmp_path: Path) -> None:
    """Hidden dirs are empty, what is bound back is read-only and hides what it must, the
    sandbox's own dir is writable, the rest of the host read-only, /tmp and /proc private."""
    home = tmp_path / "home"
    prefix = home / "toolchain"
    inner = prefix / "etc" / "jupyter"
    inner.mkdir(parents=True)
    (home / "secret.txt").write_text("home secret")
    (prefix / "tool.txt").write_text("tool\n")
    (inner / "config.py").write_text("c.Token = 'x'")
    provider = IsolatedLocalProvider(
        workspace_root=str(tmp_path / "sandboxes"),
        private_paths=(str(home), str(inner)),
        readonly_paths=[str(prefix)],
    )
    assert (await provider.check()).isolated
    script = (
        "set +e\n"
        f"cat {home}/secret.txt; echo rc $?\n"
        f"cat {prefix}/tool.txt\n"
        f"ls -A {inner} | wc -l\n"
        f"touch {prefix}/new 2>/dev/null; echo toolchain-write $?\n"
        "touch /usr/agentbuild-x 2>/dev/null; echo usr-write $?\n"
        "touch own.txt; echo own-write $?\n"
        "touch /tmp/t; ls -A /tmp\n"
        "ls /proc | grep -c '^[0-9]'\n"
    )

    sandbox = await provider.create("sees", workspace=None, files={}, env={})
    out = Collector()
    result = await sandbox.run_step(script, step=0, timeout=30, on_output=out)
    assert result.exit_code == 0, out.lines
    lines = out.lines["stdout"]
    assert lines[:6] == [
        "rc 1",
        "tool",
        "0",
        "toolchain-write 1",
        "usr-write 1",
        "own-write 0",
    ], lines
    # a private /tmp: the new file, and the way to the sandbox dir if it is under /tmp
    parts = sandbox.dir.parts
    way = {parts[2]} if parts[1] == "tmp" else set()
    assert set(lines[6:-1]) == {"t", *way}, lines
    # bash, perl (pid 1), ls, grep, and no more: the server's processes are not there
    assert int(lines[-1]) <= 5, lines
    assert (sandbox.work / "own.txt").exists() and not (prefix / "new").exists()
    await sandbox.destroy()

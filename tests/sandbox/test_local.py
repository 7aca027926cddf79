"""The local sandbox, with real processes (no mocks), against both local providers:
plain process groups and the isolated one (each step in Linux namespaces).

Inside an isolated sandbox ``$$`` and ``$!`` are pids of the step's own pid namespace,
meaningless on the host: there the checks look for the build's processes by its
environment marker instead (:func:`helpers.marked`), never by those numbers."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from jupyter_agentbuild.sandbox import LocalSandbox, LocalSandboxProvider, SandboxError
from jupyter_agentbuild.sandbox.base import Sandbox, SandboxProvider
from jupyter_agentbuild.sandbox.isolated_provider import IsolatedLocalProvider

from .helpers import (
    WAIT,
    Collector,
    create_time,
    exists,
    group_members,
    is_dir,
    is_running,
    kill_quietly,
    marked,
    wait_until,
)

PY = shlex.quote(sys.executable)


def isolated_provider(root: Path, **kw: Any) -> IsolatedLocalProvider:
    """The isolated provider, hiding the home dir as the server does (Python bound back)."""
    return IsolatedLocalProvider(workspace_root=str(root), private_paths=(str(Path.home()),), **kw)


@pytest.fixture(params=["process", "isolated"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def provider(tmp_path: Path, kind: str) -> LocalSandboxProvider:
    # 1 MiB lines: the split tests count pieces of multi-megabyte lines
    settings: dict[str, Any] = {"kill_grace": 1.0, "max_line_bytes": 1_048_576}
    if kind == "process":
        return LocalSandboxProvider(workspace_root=str(tmp_path / "sandboxes"), **settings)
    isolated = isolated_provider(tmp_path / "sandboxes", **settings)
    status = asyncio.run(isolated.check())
    assert status.available and status.isolated, status.detail
    return isolated


def step_gone(sandbox: LocalSandbox, pid: int) -> bool:
    """Nothing left of the step whose shell printed ``pid`` (``$$``)."""
    if sandbox.isolated:
        return marked(sandbox.build_id) == []
    return group_members(pid) == []


def pid_running(sandbox: LocalSandbox, pid: int) -> bool:
    """Is the process a step printed as ``pid`` (``$!``) still running? Isolated: is any
    ``sleep 1000`` of the build (what those tests start in the background)?"""
    if sandbox.isolated:
        return marked(sandbox.build_id, "sleep", "1000") != []
    return is_running(pid)


async def make(provider: LocalSandboxProvider, build_id: str = "b1", **kw: object) -> LocalSandbox:
    kw.setdefault("workspace", None)
    kw.setdefault("files", {})
    kw.setdefault("env", {})
    return await provider.create(build_id, **kw)  # type: ignore[arg-type]


async def test_implements_the_protocol(provider: LocalSandboxProvider) -> None:
    p: SandboxProvider = provider
    sandbox: Sandbox = await p.create("proto", workspace=None, files={}, env={})
    assert sandbox.id == "local-proto"
    assert p.name == "local"
    await sandbox.destroy()


async def test_steps_output_in_order_per_stream(provider: LocalSandboxProvider) -> None:
    sandbox = await make(provider)
    out = Collector()
    for step in range(3):
        cmd = f"for i in $(seq 1 300); do echo out-{step}-$i; echo err-{step}-$i >&2; done"
        result = await sandbox.run_step(cmd, step=step, timeout=30, on_output=out)
        assert result.exit_code == 0 and not result.timed_out and not result.cancelled
    assert out.lines["stdout"] == [f"out-{s}-{i}" for s in range(3) for i in range(1, 301)]
    assert out.lines["stderr"] == [f"err-{s}-{i}" for s in range(3) for i in range(1, 301)]
    assert out.max_in_flight == 1, "on_output is never called concurrently"
    await sandbox.destroy()


async def test_exit_codes_and_strict_bash(provider: LocalSandboxProvider) -> None:
    cases = [
        ("echo ok", 0, ["ok"]),
        ("exit 3", 3, []),
        ("false; echo after", 1, []),
        ("false | true; echo after", 1, []),
        ("true | false | true", 1, []),
        ('echo "it\'s \'quoted\' \\"twice\\""; echo $#', 0, ["it's 'quoted' \"twice\"", "0"]),
        ("kill -KILL $$", -signal.SIGKILL, []),
        ("cat /nonexistent-agentbuild", 1, []),
        ("undefined-command-agentbuild", 127, []),
    ]

    sandbox = await make(provider)
    for step, (cmd, code, stdout) in enumerate(cases):
        out = Collector()
        result = await sandbox.run_step(cmd, step=step, timeout=30, on_output=out)
        assert result.exit_code == code, cmd
        assert out.lines["stdout"] == stdout, cmd
    await sandbox.destroy()


async def test_decoding_nul_cr_ansi_and_last_line(provider: LocalSandboxProvider) -> None:
    sandbox = await make(provider)
    out = Collector()
    cmd = r"printf 'a\377\376b\n\033[31mred\033[0m\r\nx\0y\ncaf\303\251\nno newline'"
    result = await sandbox.run_step(cmd, step=0, timeout=30, on_output=out)
    assert result.exit_code == 0
    assert out.lines["stdout"] == [
        "a\ufffd\ufffdb",
        "\x1b[31mred\x1b[0m\r",
        "x\x00y",
        "café",
        "no newline",
    ]
    await sandbox.destroy()


async def test_huge_lines_are_split_into_pieces(provider: LocalSandboxProvider) -> None:
    limit = provider.max_line_bytes
    script = (
        "import sys\n"
        "out = sys.stdout\n"
        "out.write('a' * 3_000_000 + '\\n')\n"
        "out.write(('b€é😀' * 1_100_000)[:4_200_001] + '\\n')\n"
        "out.write('end\\n')\n"
    )

    sandbox = await make(provider, files={"big.py": script})
    out = Collector()
    result = await sandbox.run_step(f"{PY} big.py", step=0, timeout=60, on_output=out)
    assert result.exit_code == 0
    first = "a" * 3_000_000
    second = ("b€é😀" * 1_100_000)[:4_200_001]
    assert len(second.encode()) > 10_000_000, "a 10 MB line"
    assert out.lines["stdout"] == [first, second, "end"]
    pieces = out.pieces["stdout"]
    assert len(pieces[0]) == 3 and len(pieces[1]) >= 10 and len(pieces[2]) == 1
    for _stream, lines, _continued in out.batches:
        assert all(len(line.encode()) <= limit for line in lines)
    # every piece but the last of a line is the last line of a continued batch
    flagged = [lines[-1] for _s, lines, continued in out.batches if continued]
    assert flagged == pieces[0][:-1] + pieces[1][:-1]
    await sandbox.destroy()


async def test_200k_lines_complete_and_in_order(provider: LocalSandboxProvider) -> None:
    sandbox = await make(provider)
    out = Collector()
    result = await sandbox.run_step(
        "seq 1 200000; seq 1 1000 >&2", step=0, timeout=60, on_output=out
    )
    assert result.exit_code == 0
    assert out.lines["stdout"] == [str(i) for i in range(1, 200_001)]
    assert out.lines["stderr"] == [str(i) for i in range(1, 1001)]
    await sandbox.destroy()


async def test_slow_consumer_blocks_the_step(provider: LocalSandboxProvider) -> None:
    """Back-pressure: while on_output is paused, the child blocks on a full pipe."""
    total = 20_000  # lines of 1 KiB: 20 MiB, far more than any pipe and read buffer
    script = (
        "import sys\n"
        f"for i in range({total}):\n"
        "    sys.stdout.write(f'{i:08d}' + 'z' * 1015 + '\\n')\n"
        "sys.stdout.flush()\n"
        "open('finished', 'w').close()\n"
    )

    sandbox = await make(provider, files={"flood.py": script})
    out = Collector()
    out.gate = asyncio.Event()
    first = out.when(lambda s, line: True)
    task = asyncio.create_task(
        sandbox.run_step(f"exec {PY} flood.py", step=0, timeout=60, on_output=out)
    )
    await asyncio.wait_for(first.wait(), WAIT)  # the consumer is now paused
    pgid = sandbox.state()["pgids"][0][0]
    child = psutil.Process(pgid)  # `exec`: the python process leads the group
    if sandbox.isolated:  # bwrap leads the group; the writer is its grandchild
        argv0 = os.path.basename(sys.executable)
        await wait_until(lambda: marked(sandbox.build_id, argv0, "flood.py") != [], "writer")
        [pid] = marked(sandbox.build_id, argv0, "flood.py")
        child = psutil.Process(pid)
    # The only way this writer sleeps is blocking on the full pipe.
    await wait_until(lambda: child.status() == psutil.STATUS_SLEEPING, "a blocked writer")
    written = child.io_counters().write_chars
    assert written < 4 * 1024 * 1024, written  # bounded by pipe + one read chunk
    assert not (sandbox.work / "finished").exists()
    assert len(out.batches) == 1 and not task.done()
    out.gate.set()  # resume the consumer: everything arrives, the child finishes
    result = await asyncio.wait_for(task, 60)
    assert result.exit_code == 0
    assert (sandbox.work / "finished").exists()
    lines = out.lines["stdout"]
    assert len(lines) == total
    assert [int(line[:8]) for line in lines] == list(range(total))
    await sandbox.destroy()


async def test_timeout_kills_the_group(provider: LocalSandboxProvider) -> None:
    sandbox = await make(provider)
    out = Collector()
    started = time.monotonic()
    result = await sandbox.run_step(
        "echo pid $$; sleep 1000 & echo bg $!; sleep 1000", step=0, timeout=0.5, on_output=out
    )
    assert result.timed_out and not result.cancelled
    assert result.exit_code == -signal.SIGTERM
    assert time.monotonic() - started < 5
    assert step_gone(sandbox, out.value("pid"))
    assert not pid_running(sandbox, out.value("bg"))
    assert sandbox.state()["pgids"] == []
    await sandbox.destroy()


async def test_timeout_sigkills_what_ignores_sigterm(provider: LocalSandboxProvider) -> None:
    sandbox = await make(provider)
    out = Collector()
    result = await sandbox.run_step(
        "trap '' TERM; echo pid $$; sleep 1000 & echo bg $!; sleep 1000",
        step=0,
        timeout=0.5,
        on_output=out,
    )
    assert result.timed_out and result.exit_code == -signal.SIGKILL
    assert step_gone(sandbox, out.value("pid"))
    assert not pid_running(sandbox, out.value("bg"))
    await sandbox.destroy()


async def test_cancel_leaves_no_process_behind(provider: LocalSandboxProvider) -> None:
    sandbox = await make(provider)
    out = Collector()
    cmd = (
        "echo pid $$; sleep 1000 & echo bg $!; setsid sleep 1000 & echo sid $!; "
        "(sleep 1000; echo never) & echo READY; sleep 1000"
    )
    task = asyncio.create_task(sandbox.run_step(cmd, step=0, timeout=None, on_output=out))
    await out.wait_line("READY")
    pgid, bg, sid = out.value("pid"), out.value("bg"), out.value("sid")
    if sandbox.isolated:
        sleeps = ("sleep", "1000")
        await wait_until(lambda: len(marked(sandbox.build_id, *sleeps)) == 4, "the sleeps")
        times = {pid: create_time(pid) for pid in marked(sandbox.build_id, *sleeps)}
    else:
        assert sandbox.state()["pgids"] == [[pgid, create_time(pgid)]]
        await wait_until(lambda: os.getsid(sid) == sid, "setsid to take effect")
        assert os.getpgid(sid) != pgid  # it really left the group
        times = {pid: create_time(pid) for pid in (bg, sid)}
    await sandbox.cancel()
    result = await asyncio.wait_for(task, WAIT)
    assert result.cancelled and not result.timed_out
    assert result.exit_code == -signal.SIGTERM
    assert step_gone(sandbox, pgid)
    assert not any(is_running(pid, ct) for pid, ct in times.items())
    assert "never" not in out.lines["stdout"]
    await sandbox.destroy()


async def test_cancel_from_inside_on_output(provider: LocalSandboxProvider) -> None:
    sandbox = await make(provider)

    async def sink(stream: str, lines: list[str], continued: bool) -> None:
        if "READY" in lines:
            await sandbox.cancel()  # must not deadlock with the reader awaiting us

    result = await asyncio.wait_for(
        sandbox.run_step("echo READY; sleep 1000", step=0, timeout=None, on_output=sink),
        WAIT,
    )
    assert result.cancelled
    await sandbox.destroy()


async def test_background_jobs_do_not_survive_a_normal_exit(provider: LocalSandboxProvider) -> None:
    sandbox = await make(provider)
    out = Collector()
    started = time.monotonic()
    result = await sandbox.run_step(
        "echo pid $$; sleep 1000 & echo bg $!; setsid sleep 1000 & echo sid $!; echo done",
        step=0,
        timeout=30,
        on_output=out,
    )
    assert result.exit_code == 0 and out.lines["stdout"][-1] == "done"
    assert time.monotonic() - started < 5
    assert step_gone(sandbox, out.value("pid"))
    assert not pid_running(sandbox, out.value("bg"))
    assert not pid_running(sandbox, out.value("sid"))
    await sandbox.destroy()


async def test_escaped_pipe_holder_does_not_hang_the_step(provider: LocalSandboxProvider) -> None:
    """A process that left the group and dropped the marker keeps stdout open: bounded."""

    sandbox = await make(provider)
    out = Collector()
    started = time.monotonic()
    result = await sandbox.run_step(
        "env -u AGENTBUILD_BUILD_ID setsid sleep 1000 & echo sid $!; echo done",
        step=0,
        timeout=30,
        on_output=out,
    )
    try:
        assert result.exit_code == 0
        assert out.lines["stdout"][-1] == "done"
        assert time.monotonic() - started < 10
        if sandbox.isolated:  # no escape from the namespace: it died with the step
            assert marked(sandbox.build_id) == []
    finally:
        if not sandbox.isolated:  # an isolated step's pid means nothing on the host
            kill_quietly(out.value("sid"))
    await sandbox.destroy()


async def test_on_output_failure_stops_the_step(provider: LocalSandboxProvider) -> None:
    sandbox = await make(provider)
    seen: list[str] = []

    async def sink(stream: str, lines: list[str], continued: bool) -> None:
        seen.extend(lines)
        if any(line.startswith("pid ") for line in lines):
            raise RuntimeError("store down")

    with pytest.raises(RuntimeError, match="store down"):
        await asyncio.wait_for(
            sandbox.run_step("echo pid $$; sleep 1000", step=0, timeout=None, on_output=sink),
            WAIT,
        )
    pgid = int(seen[0].split()[1])
    assert step_gone(sandbox, pgid)
    assert sandbox.state()["pgids"] == []
    await sandbox.destroy()


async def test_cancelled_task_kills_the_step(provider: LocalSandboxProvider) -> None:
    sandbox = await make(provider)
    out = Collector()
    task = asyncio.create_task(
        sandbox.run_step("echo pid $$; sleep 1000", step=0, timeout=None, on_output=out)
    )
    await asyncio.wait_for(out.when(lambda s, line: line.startswith("pid ")).wait(), WAIT)
    pgid = out.value("pid")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: step_gone(sandbox, pgid), "the group to die")
    await sandbox.destroy()


async def test_close_kills_and_destroy_removes(provider: LocalSandboxProvider) -> None:
    sandbox = await make(provider, files={"f.txt": "x"})
    out = Collector()
    task = asyncio.create_task(
        sandbox.run_step("echo pid $$; sleep 1000", step=0, timeout=None, on_output=out)
    )
    await asyncio.wait_for(out.when(lambda s, line: line.startswith("pid ")).wait(), WAIT)
    await sandbox.close()
    result = await asyncio.wait_for(task, WAIT)
    assert result.cancelled
    assert step_gone(sandbox, out.value("pid"))
    assert (sandbox.work / "f.txt").exists(), "close keeps the files"
    with pytest.raises(SandboxError):
        await sandbox.run_step("true", step=1, timeout=None, on_output=out)
    await sandbox.destroy()
    assert not sandbox.dir.exists()

    # files a step made read-only go too
    sandbox = await make(provider, build_id="ro")
    step = "mkdir -p ro/sub && touch ro/sub/f && chmod 500 ro/sub ro && chmod 400 ro/sub/f"
    assert (await sandbox.run_step(step, step=0, timeout=30, on_output=out)).exit_code == 0
    await sandbox.destroy()
    assert not sandbox.dir.exists()


async def test_state_layout(provider: LocalSandboxProvider, tmp_path: Path) -> None:
    sandbox = await make(provider, build_id="st")
    state = sandbox.state()
    assert state["pgids"] == []
    assert state["dir"] == str(tmp_path / "sandboxes" / "st")
    assert state["host"] == socket.gethostname()
    out = Collector()
    result = await sandbox.run_step("pwd; echo $HOME", step=0, timeout=30, on_output=out)
    assert result.exit_code == 0
    assert out.lines["stdout"] == [str(sandbox.work), state["dir"]]
    await sandbox.destroy()


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

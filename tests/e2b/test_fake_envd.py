"""The real E2B SDK in debug mode against the fake envd: real Connect over HTTP, real processes.

These pin down both the fake and the SDK calls the E2B sandbox provider relies on.
"""

from __future__ import annotations

import asyncio
import io
import os
import shlex
import signal
from pathlib import Path

import psutil
import pytest
from e2b import (
    AsyncSandbox,
    CommandExitException,
    FileNotFoundException,
    FileType,
    InvalidArgumentException,
    PtySize,
    SandboxException,
)

from tests.sandbox.helpers import is_running as alive
from tests.sandbox.helpers import wait_until

from .fake_envd import FakeEnvd

WAIT = 10.0


async def sandbox(envd: FakeEnvd) -> AsyncSandbox:
    """What the provider does: debug mode skips the E2B API, ``sandbox_url`` names envd."""
    return await AsyncSandbox.create(debug=True, sandbox_url=envd.url)


async def test_debug_sandbox_needs_no_api(fake_envd: FakeEnvd) -> None:
    # The fixture's E2B_DEBUG / E2B_SANDBOX_URL let a bare create() reach the fake.
    sbx = await AsyncSandbox.create()
    assert sbx.sandbox_id == "debug_sandbox_id"
    assert sbx.envd_api_url == fake_envd.url
    assert sbx.get_host(8080) == "localhost:8080"
    assert await sbx.is_running()
    # Debug mode's kill is a no-op: envd and its processes live on.
    assert await sbx.kill() is True
    assert (await sbx.commands.run("echo still")).stdout == "still\n"


async def test_foreground_failure_raises_with_outputs(fake_envd: FakeEnvd) -> None:
    sbx = await sandbox(fake_envd)
    with pytest.raises(CommandExitException) as info:
        await sbx.commands.run("echo hi; echo err >&2; exit 3")
    assert (info.value.exit_code, info.value.stdout, info.value.stderr) == (3, "hi\n", "err\n")
    (record,) = fake_envd.processes
    assert (record.cmd, record.args) == ("/bin/bash", ["-l", "-c", "echo hi; echo err >&2; exit 3"])
    assert record.exit_code == 3


async def test_envs_and_cwd_reach_the_process(fake_envd: FakeEnvd) -> None:
    sbx = await sandbox(fake_envd)
    assert await sbx.files.make_dir("/home/user/work") is True
    result = await sbx.commands.run(
        'echo "$GREETING"; pwd -P', envs={"GREETING": "hello world"}, cwd="/home/user/work"
    )
    assert result.stdout == "hello world\n/home/user/work\n"  # the VM's own paths
    assert result.exit_code == 0
    # The default cwd is the user's home; no sandbox root: /../.. is /.
    assert (await sbx.commands.run("pwd -P")).stdout == "/home/user\n"
    assert (await sbx.commands.run("pwd -P", cwd="/../..")).stdout == "/\n"
    with pytest.raises(InvalidArgumentException):
        await sbx.commands.run("true", cwd="/home/user/missing")
    record = fake_envd.processes[0]
    assert (record.envs, record.cwd, record.user) == (
        {"GREETING": "hello world"},
        "/home/user/work",
        "user",
    )
    assert len(fake_envd.processes) == 3  # the refused one never started


async def test_commands_run_as_envd_runs_them(fake_envd: FakeEnvd) -> None:
    """setuid to the user, only envd's variables, under envd's oom/ionice/nice wrapper."""

    sbx = await sandbox(fake_envd)
    script = "id -un; cat /proc/$$/oom_score_adj; env -0 | sort -z | tr '\\0' '\\n'"
    result = await sbx.commands.run(
        f"exec bash --noprofile --norc -c {shlex.quote(script)}", envs={"X": "1"}
    )
    lines = result.stdout.splitlines()
    assert lines[:2] == ["user", "100"]
    names = {line.split("=", 1)[0] for line in lines[2:]}
    # bash adds PWD, SHLVL and _ itself
    assert names - {"PWD", "SHLVL", "_", "OLDPWD"} == {"HOME", "LOGNAME", "PATH", "USER", "X"}
    assert "HOME=/home/user" in lines and "USER=user" in lines
    assert (await sbx.commands.run("id -un", user="root")).stdout == "root\n"
    # what a command cannot write as its user stays unwritten
    with pytest.raises(CommandExitException):
        await sbx.commands.run("touch /etc/agentbuild-fake-envd-test")


async def test_state_persists_between_commands(fake_envd: FakeEnvd) -> None:
    sbx = await sandbox(fake_envd)
    await sbx.commands.run("echo kept > /tmp/state; (sleep 300 >/dev/null 2>&1 &)")
    assert (await sbx.commands.run("cat /tmp/state")).stdout == "kept\n"
    assert "sleep 300" in (await sbx.commands.run("ps -eo args")).stdout
    assert (fake_envd.root / "tmp" / "state").read_text() == "kept\n"
    assert any("sleep" in psutil.Process(pid).name() for pid in fake_envd.vm_pids())


async def test_background_output_arrives_while_running(fake_envd: FakeEnvd) -> None:
    sbx = await sandbox(fake_envd)
    out: list[str] = []
    err: list[str] = []
    saw_out, saw_err = asyncio.Event(), asyncio.Event()

    def on_stdout(chunk: str) -> None:
        out.append(chunk)
        if "ready\n" in "".join(out):
            saw_out.set()

    def on_stderr(chunk: str) -> None:
        err.append(chunk)
        saw_err.set()

    handle = await sbx.commands.run(
        "echo ready; echo warn >&2; until [ -e go ]; do sleep 0.01; done; echo done",
        background=True,
        on_stdout=on_stdout,
        on_stderr=on_stderr,
    )
    await asyncio.wait_for(asyncio.gather(saw_out.wait(), saw_err.wait()), WAIT)
    # Both lines arrived while the command still waits for the file only we create.
    assert handle.exit_code is None
    assert alive(handle.pid)
    await sbx.files.write("go", "")  # relative: the home, the command's cwd
    result = await asyncio.wait_for(handle.wait(), WAIT)
    assert (result.stdout, result.stderr) == ("ready\ndone\n", "warn\n")
    assert ("".join(out), "".join(err)) == ("ready\ndone\n", "warn\n")


async def test_connect_and_stdin(fake_envd: FakeEnvd) -> None:
    sbx = await sandbox(fake_envd)
    handle = await sbx.commands.run("cat; echo end", background=True, stdin=True)
    other = await sbx.commands.connect(handle.pid)
    await handle.send_stdin("abc\n")
    await handle.close_stdin()
    result = await asyncio.wait_for(handle.wait(), WAIT)
    assert result.stdout == "abc\nend\n"
    # A second follower (connected before any output) gets the same output.
    assert (await asyncio.wait_for(other.wait(), WAIT)).stdout == "abc\nend\n"


async def test_kill_signals_only_the_pid(fake_envd: FakeEnvd) -> None:
    """envd gives a command no process group: a kill ends the command, its children live
    on (reparented), and its pipe readers stop (output still held is lost)."""

    sbx = await sandbox(fake_envd)
    handle = await sbx.commands.run("sleep 1000 & sleep 1001 & wait", background=True)
    await wait_until(lambda: len(psutil.Process(handle.pid).children()) == 2, "two sleeps")
    children = psutil.Process(handle.pid).children()
    assert os.getpgid(handle.pid) == os.getpgid(0)  # envd's own group (the test's here)
    assert [p.pid for p in await sbx.commands.list()] == [handle.pid]

    assert await handle.kill() is True
    with pytest.raises(CommandExitException) as info:
        await asyncio.wait_for(handle.wait(), WAIT)
    assert info.value.exit_code == -1
    assert info.value.error == "signal: killed"
    assert all(child.is_running() and child.ppid() != handle.pid for child in children)
    assert await sbx.commands.list() == []
    assert await sbx.commands.kill(handle.pid) is False  # not found any more
    assert fake_envd.processes[0].exit_code == -signal.SIGKILL


async def test_the_end_event_waits_for_both_pipes(fake_envd: FakeEnvd) -> None:
    sbx = await sandbox(fake_envd)
    loop = asyncio.get_running_loop()
    began = loop.time()
    result = await sbx.commands.run("sleep 1.5 & echo shell-done")
    assert result.stdout == "shell-done\n"
    assert loop.time() - began >= 1.4  # the shell exited at once; its child held the pipes


async def test_output_is_chunked_and_lost_without_a_follower(fake_envd: FakeEnvd) -> None:
    sbx = await sandbox(fake_envd)
    chunks: list[str] = []
    result = await sbx.commands.run(
        "head -c 200000 /dev/zero | tr '\\0' x", on_stdout=chunks.append
    )
    assert len(result.stdout) == 200000 and max(len(c) for c in chunks) <= 32 * 1024
    handle = await sbx.commands.run(
        "echo early; until [ -e go ]; do sleep 0.01; done; echo late", background=True
    )
    await handle.disconnect()
    await wait_until(lambda: fake_envd.host("/home/user").exists(), "the home")
    await asyncio.sleep(0)  # nothing to await: 'early' went out while nobody followed
    other = await sbx.commands.connect(handle.pid)
    await sbx.files.write("go", "")
    assert (await asyncio.wait_for(other.wait(), WAIT)).stdout in ("late\n", "early\nlate\n")


async def test_stop_kills_what_still_runs(fake_envd: FakeEnvd) -> None:
    sbx = await sandbox(fake_envd)
    handle = await sbx.commands.run("sleep 1000", background=True)
    await handle.disconnect()  # the client is gone; the command is not
    (record,) = fake_envd.processes
    assert alive(record.pid)
    fake_envd.stop()
    assert not alive(record.pid)
    assert record.exit_code == -signal.SIGKILL


async def test_files_round_trip(fake_envd: FakeEnvd) -> None:
    sbx = await sandbox(fake_envd)
    files = sbx.files
    info = await files.write("/home/user/dir/a.txt", "héllo\n")
    assert (info.path, info.name, info.type) == ("/home/user/dir/a.txt", "a.txt", FileType.FILE)
    assert await files.read("/home/user/dir/a.txt") == "héllo\n"

    payload = bytes(range(256)) * 64
    await files.write("/home/user/dir/sub/b.bin", payload)  # multipart, parents created
    assert await files.read("/home/user/dir/sub/b.bin", format="bytes") == bytearray(payload)
    await files.write("/home/user/dir/c.bin", io.BytesIO(payload))  # octet-stream
    await files.write("/home/user/dir/d.bin", payload, gzip=True)  # gzipped octet-stream
    assert fake_envd.host("/home/user/dir/c.bin").read_bytes() == payload
    assert await files.read("/home/user/dir/d.bin", format="bytes", gzip=True) == payload
    written = await files.write_files(
        [{"path": "/home/user/many/1", "data": "one"}, {"path": "many/2", "data": b"2"}]
    )
    assert [w.path for w in written] == ["/home/user/many/1", "/home/user/many/2"]
    await files.write("rel.txt", "relative to the home")
    assert fake_envd.host("/home/user/rel.txt").read_text() == "relative to the home"

    assert await files.make_dir("/home/user/dir/empty") is True
    assert await files.make_dir("/home/user/dir/empty") is False
    top = await files.list("/home/user/dir")
    assert [(e.name, e.type) for e in top] == [
        ("a.txt", FileType.FILE),
        ("c.bin", FileType.FILE),
        ("d.bin", FileType.FILE),
        ("empty", FileType.DIR),
        ("sub", FileType.DIR),
    ]
    deep = await files.list("/home/user/dir", depth=2)
    assert [e.path for e in deep] == [e.path for e in top] + ["/home/user/dir/sub/b.bin"]

    stat = await files.get_info("/home/user/dir/a.txt")
    assert (stat.size, stat.type, stat.permissions) == (7, FileType.FILE, "-rw-r--r--")
    assert stat.owner == "user"  # written by root, chowned
    assert await files.exists("/home/user/dir/a.txt")
    assert not await files.exists("/home/user/dir/nope")
    moved = await files.rename("/home/user/dir/a.txt", "/home/user/moved.txt")
    assert moved.path == "/home/user/moved.txt"

    await files.remove("/home/user/dir/sub")
    assert not await files.exists("/home/user/dir/sub")
    assert not fake_envd.host("/home/user/dir/sub").exists()
    with pytest.raises(FileNotFoundException):
        await files.read("/home/user/dir/sub/b.bin")
    await files.remove("/home/user/dir/sub")  # a missing path: no error (as envd)
    with pytest.raises(FileNotFoundException):
        await files.list("/home/user/dir/sub")


async def test_unimplemented_rpcs_say_so(fake_envd: FakeEnvd) -> None:
    sbx = await sandbox(fake_envd)
    with pytest.raises(SandboxException, match="UNIMPLEMENTED"):
        await sbx.files.watch_dir("/home/user", on_event=lambda event: None)
    with pytest.raises(SandboxException, match="UNIMPLEMENTED"):
        await sbx.pty.create(PtySize(rows=24, cols=80), on_data=lambda data: None)


async def test_no_sandbox_root(fake_envd: FakeEnvd) -> None:
    """``..`` is allowed and stops at ``/``: the VM's /etc/passwd (this host's, in the
    fake); the fake writes only in the VM's /home and /tmp (a simplification: as root the
    real envd writes anywhere in its VM)."""
    passwd = await asyncio.to_thread(Path("/etc/passwd").read_text)
    sbx = await sandbox(fake_envd)
    for path in ("../../etc/passwd", "/../../etc/passwd", "/home/user/../../../etc/passwd"):
        assert await sbx.files.read(path) == passwd
    with pytest.raises(SandboxException):
        await sbx.files.write("../../etc/agentbuild-test", "x")


async def test_symlinks_are_reported_as_envd_does(fake_envd: FakeEnvd) -> None:
    home = fake_envd.host("/home/user")
    (home / "d").mkdir()
    (home / "d" / "f.txt").write_text("12345")
    (home / "d" / "rel").symlink_to("f.txt")
    (home / "d" / "up").symlink_to("../d")
    (home / "d" / "dangling").symlink_to("nowhere")
    os.mkfifo(home / "d" / "fifo")

    sbx = await sandbox(fake_envd)
    # on the wire the type is the target's; the SDK shows SYMLINK from ``is_symlink``
    rel = await sbx.files.get_info("/home/user/d/rel")
    assert (rel.type, rel.symlink_target, rel.size) == (
        FileType.SYMLINK,
        "/home/user/d/f.txt",
        5,
    )
    assert rel.permissions == "Lrwxrwxrwx" and rel.mode == 0o644
    up = await sbx.files.get_info("/home/user/d/up")
    assert up.symlink_target == "/home/user/d"
    dangling = await sbx.files.get_info("/home/user/d/dangling")
    assert dangling.symlink_target == "/home/user/d/nowhere"
    # the SDK's list drops entries of no known type: the dangling link and the fifo
    listed = await sbx.files.list("/home/user/d")
    assert [e.name for e in listed] == ["f.txt", "rel", "up"]

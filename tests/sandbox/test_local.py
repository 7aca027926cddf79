"""The local sandbox, with real processes (no mocks), against both local providers:
plain process groups and the isolated one (each step in Linux namespaces).

Inside an isolated sandbox ``$$`` and ``$!`` are pids of the step's own pid namespace,
meaningless on the host: there the checks look for the build's processes by its
environment marker instead (:func:`helpers.marked`), never by those numbers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from jupyter_agentbuild.sandbox import LocalSandboxProvider, SandboxError
from jupyter_agentbuild.sandbox.base import Sandbox, SandboxProvider

from .helpers import (
    PY,
    WAIT,
    Collector,
    create_time,
    is_running,
    kill_quietly,
    make,
    marked,
    pid_running,
    step_gone,
    wait_until,
)


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

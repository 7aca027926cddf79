"""End to end: a real server, a real kernel started through it, driven over its WebSocket."""

from __future__ import annotations

import re
from typing import Any

import pytest

from jupyter_agentbuild.vocabulary import ACTIVE

from .conftest import LOAD
from .kernel import KernelSession

pytestmark = pytest.mark.slow

SCRIPT = 'for i in $(seq 1 40); do echo "line $i"; done\nprintf "\\033[32mall done\\033[0m\\n"'


def build_id_from(text: str) -> str:
    match = re.search(r"build (?:\S+ \()?([0-9A-Za-z_-]{8,})\)?", text)
    assert match, text
    return match.group(1)


async def test_cell_magic_returns_at_once_and_widget_follows_to_the_end(
    kernel: KernelSession,
) -> None:
    assert (await kernel.execute(LOAD)).status == "ok"
    run = await kernel.execute(f"%%agentbuild --name demo\n{SCRIPT}")
    assert run.status == "ok", run.error
    assert run.seconds < 10.0  # (a bound a loaded machine keeps; waiting is tested below)
    assert any("application/vnd.jupyter.widget-view+json" in d for d in run.displays)

    def finished() -> bool:
        return (
            any("succeeded" in v for v in kernel.status_values())
            and "all done" in kernel.log_html()
        )

    await kernel.wait_for(finished, within=60)
    log = kernel.log_html()
    assert "line 40" in log
    assert '<span style="color:#00a250">all done</span>' in log
    assert log.rstrip().endswith("build succeeded</span></pre>")


async def test_quiet_and_wait(kernel: KernelSession) -> None:
    await kernel.execute(LOAD)
    run = await kernel.execute("%%agentbuild --quiet --wait --name ok\necho fine")
    assert run.status == "ok", run.error
    assert re.search(r"build ok \(\S+\) succeeded", run.stdout), run.stdout
    assert not run.displays  # --quiet: no widget


async def test_wait_fails_the_cell_when_the_build_fails(kernel: KernelSession) -> None:
    await kernel.execute(LOAD)
    run = await kernel.execute("%%agentbuild --wait --name broken\necho before\nexit 3\necho never")
    assert run.status == "error"
    assert run.error is not None and run.error["ename"] == "BuildFailed"
    assert "failed" in run.error["evalue"] and "exit code 3" in run.error["evalue"]
    assert len(run.error["traceback"]) == 1  # a message, not a traceback
    # The widget was updated while the cell blocked, and shows the outcome.
    assert any("failed" in v for v in kernel.status_values())
    assert "before" in kernel.log_html() and "never" not in kernel.log_html()
    # "Run all" stops: the next cell of the same request batch is aborted.
    after = await kernel.execute("print('still here')")
    assert after.status == "ok"


async def test_interrupt_during_wait_cancels_the_build(
    kernel: KernelSession, jp_fetch: Any, api: Any
) -> None:
    await kernel.execute(LOAD)
    msg_id = kernel.send_execute("%%agentbuild --wait --name long\necho started\nsleep 60")
    await kernel.wait_for(lambda: "started" in kernel.log_html(), within=60)
    await jp_fetch("api", "kernels", kernel.kernel_id, "interrupt", method="POST", body="")
    run = await kernel.collect(msg_id, within=60)
    reply, stderr = run.reply, run.stderr
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert "cancelled build long" in stderr
    builds = (await api.call("GET", "builds"))[1]["builds"]
    build_id = builds[0]["id"]
    final = await api.finish(build_id)
    assert final["status"] == "cancelled"
    # The widget goes on to show the end.
    await kernel.wait_for(lambda: any("cancelled" in v for v in kernel.status_values()), within=60)
    assert kernel.log_html().count("started") == 1  # resumed where it was, no repeats


async def test_line_magics(kernel: KernelSession) -> None:
    await kernel.execute(LOAD)
    started = await kernel.execute(
        '%%agentbuild --quiet --wait --name lm\nfor i in 1 2 3; do echo "out $i"; done'
    )
    build_id = build_id_from(started.stdout)

    listed = await kernel.execute("%agentbuild list")
    assert listed.status == "ok"
    text = listed.results[0]["text/plain"]
    assert build_id in text and "succeeded" in text and "lm" in text
    assert build_id in listed.results[0]["text/html"]

    logs = await kernel.execute(f"%agentbuild logs {build_id}")
    assert "out 1\nout 2\nout 3" in logs.stdout
    tail = await kernel.execute(f"%agentbuild logs {build_id} --tail 2")
    assert "out 1" not in tail.stdout
    followed = await kernel.execute(f"%agentbuild logs {build_id} --follow")
    assert "out 3" in followed.stdout and "status: succeeded" in followed.stdout

    kernel.comms.clear()
    shown = await kernel.execute(f"%agentbuild show {build_id}")
    assert shown.status == "ok" and shown.displays
    await kernel.wait_for(lambda: "out 3" in kernel.log_html(), within=30)
    assert any("succeeded" in v for v in kernel.status_values())

    preview = await kernel.execute(f"%agentbuild preview {build_id}")
    assert preview.status == "error" and "has no preview" in preview.error["evalue"]  # type: ignore[index]

    helped = await kernel.execute("%agentbuild help")
    assert "%%agentbuild [--name N]" in helped.stdout and "show ID" in helped.stdout

    cancel_done = await kernel.execute(f"%agentbuild cancel {build_id}")
    assert cancel_done.status == "error"
    assert "already finished (succeeded)" in cancel_done.error["evalue"]  # type: ignore[index]

    deleted = await kernel.execute(f"%agentbuild delete {build_id}")
    assert deleted.stdout.strip() == f"deleted build {build_id}"
    gone = await kernel.execute(f"%agentbuild show {build_id}")
    assert gone.status == "error" and gone.error is not None
    assert gone.error["ename"] == "MagicError" and "[not_found]" in gone.error["evalue"]


async def test_cancel_a_running_build_from_the_magic(kernel: KernelSession, api: Any) -> None:
    await kernel.execute(LOAD)
    started = await kernel.execute("%%agentbuild --quiet --name sleeper\necho up; sleep 60")
    build_id = build_id_from(started.stdout)
    # the cell returned while its build runs (it sleeps a minute): it never waits for it
    assert (await api.get(build_id))["status"] in ACTIVE
    cancelled = await kernel.execute(f"%agentbuild cancel {build_id}")
    assert cancelled.status == "ok", cancelled.error
    assert f"cancel requested: build sleeper ({build_id})" in cancelled.stdout
    final = await api.finish(build_id)
    assert final["status"] == "cancelled"


async def test_bad_usage_prints_usage(kernel: KernelSession) -> None:
    await kernel.execute(LOAD)
    for code, usage in [
        ("%agentbuild frobnicate", "usage: %agentbuild list"),
        ("%agentbuild", "usage: %agentbuild list"),
        ("%agentbuild show", "usage: %agentbuild list"),
        ("%%agentbuild --bogus\necho x", "usage: %%agentbuild"),
        ("%%agentbuild --timeout never\necho x", "usage: %%agentbuild"),
    ]:
        run = await kernel.execute(code)
        assert run.status == "error", code
        assert usage in run.stderr, (code, run.stderr)
        assert "Traceback" not in run.stderr
        assert run.error is None  # a UsageError is printed, not raised as a traceback


async def test_load_ext_package(kernel: KernelSession) -> None:
    run = await kernel.execute("%load_ext jupyter_agentbuild\n%agentbuild help")
    assert run.status == "ok", run.error
    assert "%%agentbuild" in run.stdout


async def test_artifacts_and_preview_magics(kernel: KernelSession, api: Any) -> None:
    await kernel.execute(LOAD)
    started = await kernel.execute(
        "%%agentbuild --quiet --wait --name art --artifacts 'out/*.txt' "
        "--preview 'python3 -m http.server 8000 --bind 127.0.0.1 --directory out' --port 8000\n"
        "mkdir -p out; echo hi > out/a.txt; echo skip > b.log"
    )
    assert started.status == "ok", started.error
    build_id = build_id_from(started.stdout)
    listed = await kernel.execute(f"%agentbuild artifacts {build_id}")
    assert listed.status == "ok", listed.error
    assert "out/a.txt" in listed.results[0]["text/plain"]
    html = listed.results[0]["text/html"]
    assert f"agentbuild/api/builds/{build_id}/artifacts/out/a.txt" in html
    assert "b.log" not in html

    shown = await kernel.execute(f"%agentbuild preview {build_id}")
    assert shown.status == "ok", shown.error
    assert shown.displays
    # The kernel reached the server at 127.0.0.1: the preview's own origin is a
    # {label}.localhost host, printed and framed (keeping its origin there).
    url = (await api.get(build_id))["preview"]["url"]
    assert re.fullmatch(rf"http://p{build_id}-[a-z2-7]{{26}}\.localhost:\d+/", url), url
    assert f"preview of build art ({build_id}): {url}" in shown.stdout
    frames = [s for s in kernel.comms.values() if "<iframe" in str(s.get("value", ""))]
    assert frames and f'src="{url}"' in str(frames[-1]["value"])
    assert "allow-same-origin" in str(frames[-1]["value"])
    stopped = await kernel.execute(f"%agentbuild preview {build_id} --stop")
    assert stopped.status == "ok", stopped.error
    assert (await api.get(build_id))["preview"]["state"] == "stopped"


async def test_cancel_button_and_closing_the_widget(kernel: KernelSession, api: Any) -> None:
    await kernel.execute(LOAD)
    run = await kernel.execute("%%agentbuild --name button\necho up\nsleep 60")
    assert run.status == "ok"
    await kernel.wait_for(lambda: "up" in kernel.log_html(), within=60)
    (button_id,) = [
        comm_id
        for comm_id, state in kernel.comms.items()
        if state.get("_model_name") == "ButtonModel" and state.get("description") == "Cancel"
    ]
    # What the front end sends when the button is clicked.
    kernel.send(
        "comm_msg",
        {"comm_id": button_id, "data": {"method": "custom", "content": {"event": "click"}}},
    )
    await kernel.wait_for(lambda: any("cancelled" in v for v in kernel.status_values()), 60)
    builds = (await api.call("GET", "builds"))[1]["builds"]
    assert builds[0]["status"] == "cancelled"

    # A widget closed while it follows a running build stops its task; the build goes on.
    await kernel.execute("%%agentbuild --name closing\necho up2\nsleep 60")
    await kernel.wait_for(lambda: "up2" in kernel.log_html(), within=60)
    closed = await kernel.execute(
        "import asyncio, ipywidgets\n"
        "from jupyter_agentbuild.widgets.build import FOLLOWERS\n"
        "following = list(FOLLOWERS)\n"
        "ipywidgets.Widget.close_all()\n"
        "await asyncio.wait(following, timeout=30)\n"
        "print(len(following), all(t.cancelled() for t in following), len(FOLLOWERS))"
    )
    assert closed.status == "ok", closed.error
    assert closed.stdout.split() == ["1", "True", "0"]
    builds = (await api.call("GET", "builds"))[1]["builds"]
    assert builds[0]["status"] == "running"
    cancel = await kernel.execute(f"%agentbuild cancel {builds[0]['id']}")
    assert cancel.status == "ok"

"""The widget's data side: capped log blocks, hidden-line count, throttle, build state."""

from __future__ import annotations

from typing import Any

from jupyter_agentbuild.client import Build
from jupyter_agentbuild.widgets.view_state import BuildState, LogBuffer, Throttle


def log_entry(seq: int, text: str, stream: str = "stdout") -> dict[str, Any]:
    return {"seq": seq, "ts": "", "kind": "log", "stream": stream, "step": 0, "text": text}


def event(seq: int, type_: str, **data: Any) -> dict[str, Any]:
    return {"seq": seq, "ts": "", "kind": "event", "type": type_, "data": data}


def visible_lines(buf: LogBuffer) -> list[str]:
    return [line for block in buf.blocks for line in block.lines]


def test_small_log_is_shown_whole() -> None:
    buf = LogBuffer(block_lines=3, max_blocks=2)
    for i in range(5):
        buf.add_line("stdout", f"line {i}")
    changed = buf.flush()
    assert [b.index for b in changed] == [0, 1]
    assert buf.layout_changed
    assert visible_lines(buf) == [f"line {i}" for i in range(5)]
    assert buf.hidden == 0
    assert buf.last_line == "line 4"


def test_only_changed_blocks_are_returned() -> None:
    buf = LogBuffer(block_lines=3, max_blocks=2)
    for i in range(4):
        buf.add_line("stdout", str(i))
    buf.flush()
    buf.add_line("stdout", "4")
    changed = buf.flush()
    assert [b.index for b in changed] == [1]
    assert not buf.layout_changed
    assert changed[0].html() == "3\n4"
    assert buf.flush() == []


def test_cap_evicts_whole_blocks_and_counts_hidden() -> None:
    buf = LogBuffer(block_lines=10, max_blocks=3)
    for i in range(25):
        buf.add_line("stdout", str(i))
    buf.flush()
    for i in range(25, 47):
        buf.add_line("stdout", str(i))
    buf.flush()
    # 47 lines -> blocks 2, 3, 4 visible (lines 20..46); 20 hidden.
    assert [b.index for b in buf.blocks] == [2, 3, 4]
    assert visible_lines(buf) == [str(i) for i in range(20, 47)]
    assert buf.hidden == 20
    assert buf.shown + buf.hidden == buf.total == 47


def test_a_flood_renders_only_what_stays_visible() -> None:
    buf = LogBuffer(block_lines=100, max_blocks=20)
    for i in range(1_000_000):
        buf.add_line("stdout", f"\x1b[32m{i}\x1b[0m" if i % 2 else str(i))
    buf.flush()
    assert buf.total == 1_000_000
    assert buf.shown <= 2000
    assert buf.hidden == 1_000_000 - buf.shown
    assert buf.rendered == buf.shown  # nothing rendered that was not shown
    assert buf.last_line == "\x1b[32m999999\x1b[0m"
    assert "999999" in buf.blocks[-1].lines[-1]


def test_colour_state_survives_dropped_lines() -> None:
    buf = LogBuffer(block_lines=2, max_blocks=1)
    buf.add_line("stdout", "\x1b[31mred from here")
    for _ in range(5):
        buf.add_line("stdout", "x")
    buf.flush()
    assert all("color:#e75c58" in line for line in visible_lines(buf))


def test_stderr_is_marked_and_escaped() -> None:
    buf = LogBuffer()
    buf.add_line("stderr", "<b>oops</b>")
    buf.flush()
    (line,) = visible_lines(buf)
    assert "&lt;b&gt;oops&lt;/b&gt;" in line
    assert line.startswith('<span style="background-color:')


def test_skip_counts_hidden_without_fetching() -> None:
    buf = LogBuffer()
    buf.skip(5000)
    buf.add_line("stdout", "tail")
    buf.flush()
    assert buf.hidden == 5000
    assert visible_lines(buf) == ["tail"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_throttle() -> None:
    clock = FakeClock()
    throttle = Throttle(0.1, clock)
    assert throttle.delay() == 0
    throttle.mark()
    assert abs(throttle.delay() - 0.1) < 1e-9
    clock.now += 0.04
    assert abs(throttle.delay() - 0.06) < 1e-9
    clock.now += 0.2
    assert throttle.delay() == 0


def test_build_state_follows_events() -> None:
    build = Build(
        id="b1", status="queued", last_seq=0, spec={"steps": [{"run": "a"}, {"run": "b"}]}
    )
    state = BuildState(build)
    buf = LogBuffer()
    state.apply(
        [
            event(1, "status", status="running"),
            event(2, "step_started", step=0, name="compile"),
            log_entry(3, "hello"),
        ],
        buf,
    )
    assert state.status == "running"
    assert state.step_label == "step 1/2 compile"
    assert state.last_seq == 3
    state.apply(
        [
            event(4, "step_finished", step=0, exit_code=2),
            event(5, "status", status="failed", exit_code=2),
        ],
        buf,
    )
    assert state.terminal and state.status == "failed"
    assert state.step_label == ""
    buf.flush()
    lines = visible_lines(buf)
    assert "step 1/2 compile" in lines[0]
    assert lines[1] == "hello"
    assert "exit code 2" in lines[2]
    assert "build failed" in lines[3]


def test_step_label_follows_log_lines_when_events_were_skipped() -> None:
    spec = {"steps": [{"run": "a", "name": "fetch"}, {"run": "b", "name": "compile"}]}
    state = BuildState(Build(id="b", status="running", spec=spec))
    state.apply([{**log_entry(900, "x"), "step": 1}], LogBuffer())
    assert state.step_label == "step 2/2 compile"

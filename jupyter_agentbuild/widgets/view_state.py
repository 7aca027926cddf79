"""What the build widget shows, as plain data: no ipywidgets here, so it is cheap to test.

- :class:`LogBuffer` keeps the last ``max_blocks * block_lines`` lines, rendered to HTML in
  fixed blocks of ``block_lines``, and counts the lines it hides. Lines are rendered lazily,
  at flush time, and only if they will be visible: a million-line build costs the kernel a
  deque append per line, not an HTML render.
- :class:`BuildState` follows status, step and exit code from the Build and its entries.
- :class:`Throttle` says when the next flush may happen (at most one per ``interval``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html import escape
from typing import Any

from ..ansi import AnsiRenderer
from ..client.records import Build, Entry
from ..vocabulary import TERMINAL, EntryKind, EventType, Stream

STDERR_STYLE = "background-color:rgba(231,92,88,0.12)"
NOTE_STYLE = "color:var(--jp-ui-font-color2, #757575);font-style:italic"


@dataclass
class Block:
    index: int
    lines: list[str] = field(default_factory=list)

    def html(self) -> str:
        return "\n".join(self.lines)


class LogBuffer:
    """The visible tail of a log, in blocks, with a count of hidden lines."""

    def __init__(self, block_lines: int = 100, max_blocks: int = 20) -> None:
        self.block_lines = block_lines
        self.max_blocks = max_blocks
        self.capacity = block_lines * max_blocks
        self.blocks: deque[Block] = deque()
        self.total = 0  # lines that have taken an index: shown, hidden or evicted
        self.hidden = 0  # lines not shown (skipped, dropped unrendered, or evicted)
        self.last_line = ""  # plain text of the newest line, for status displays and tests
        self.rendered = 0  # lines rendered to HTML: a flood must render only what stays shown
        self._pending: deque[tuple[str, str]] = deque()  # (stream | "note", text | html)
        self._renderers: dict[str, AnsiRenderer] = {}
        self._dirty: set[int] = set()
        self.layout_changed = False

    @property
    def shown(self) -> int:
        return sum(len(b.lines) for b in self.blocks)

    def skip(self, count: int) -> None:
        """``count`` earlier lines exist but will not be fetched (``show`` of a long log)."""
        self.hidden += max(0, count)

    def add_line(self, stream: str, text: str) -> None:
        self._push((stream, text))
        self.last_line = text

    def add_note(self, html: str) -> None:
        """A line of trusted, already-escaped HTML (an event written by this package)."""
        self._push(("note", html))

    def _push(self, item: tuple[str, str]) -> None:
        self._pending.append(item)
        if len(self._pending) > self.capacity:
            self._drop(self._pending.popleft())

    def _drop(self, item: tuple[str, str]) -> None:
        stream, text = item
        if stream != "note":
            self._renderer(stream).advance(text)
        self.hidden += 1
        self.total += 1

    def _renderer(self, stream: str) -> AnsiRenderer:
        renderer = self._renderers.get(stream)
        if renderer is None:
            renderer = self._renderers[stream] = AnsiRenderer()
        return renderer

    def _render(self, item: tuple[str, str]) -> str:
        self.rendered += 1
        stream, text = item
        if stream == "note":
            return text
        html = self._renderer(stream).render(text)
        if stream == Stream.STDERR:
            return f'<span style="{STDERR_STYLE}">{html}</span>'
        return html

    def flush(self) -> list[Block]:
        """Place pending lines; return the blocks whose content changed (still visible)."""
        self.layout_changed = False
        if not self._pending:
            return []
        end = self.total + len(self._pending)
        first_block = max(0, (end - 1) // self.block_lines - self.max_blocks + 1)
        first_visible = first_block * self.block_lines
        while self._pending:
            item = self._pending.popleft()
            if self.total < first_visible:
                self._drop(item)
                continue
            index = self.total // self.block_lines
            if not self.blocks or self.blocks[-1].index != index:
                self.blocks.append(Block(index))
                self.layout_changed = True
            self.blocks[-1].lines.append(self._render(item))
            self._dirty.add(index)
            self.total += 1
        while self.blocks and self.blocks[0].index < first_block:
            self.hidden += len(self.blocks.popleft().lines)
            self.layout_changed = True
        changed = [b for b in self.blocks if b.index in self._dirty]
        self._dirty.clear()
        return changed


class Throttle:
    """At most one flush per ``interval`` seconds."""

    def __init__(self, interval: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last = float("-inf")

    def delay(self) -> float:
        """Seconds to wait before the next flush is allowed (0: now)."""
        return max(0.0, self._last + self.interval - self.clock())

    def mark(self) -> None:
        self._last = self.clock()


def _note(symbol: str, text: str) -> str:
    return f'<span style="{NOTE_STYLE}">{escape(symbol + " " + text)}</span>'


class BuildState:
    """Status, step and outcome of one build, from its record and its event entries."""

    def __init__(self, build: Build) -> None:
        self.build = build
        self.status = build.status
        self.step_label = ""
        self.last_seq = 0  # the newest entry applied (or skipped): where to resume
        self.steps_total = len((build.get("spec") or {}).get("steps") or [])
        self.step_index: Any = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def update_build(self, build: Build) -> None:
        self.build = build
        self.status = build.status or self.status
        self.steps_total = len((build.get("spec") or {}).get("steps") or []) or self.steps_total
        if self.terminal:
            self.step_label = ""

    def apply(self, entries: Iterable[Entry], log: LogBuffer) -> None:
        """Feed a batch of entries: log lines go to ``log``, events update the state."""
        add_line = log.add_line
        seq = self.last_seq
        for entry in entries:
            kind = entry.get("kind")
            if kind == EntryKind.LOG:
                add_line(entry.get("stream") or Stream.STDOUT, entry.get("text") or "")
                step = entry.get("step")
                if step != self.step_index and step is not None and not self.terminal:
                    self._enter_step(step)
            elif kind == EntryKind.EVENT:
                note = self._apply_event(str(entry.get("type") or ""), entry.get("data") or {})
                if note:
                    log.add_note(note)
            seq = entry.get("seq") or seq
        self.last_seq = max(self.last_seq, int(seq))

    def _enter_step(self, step: Any) -> None:
        """Log lines carry their step: the label stays right when events were skipped."""
        self.step_index = step
        self.step_label = self._step_name({"step": step})

    def _spec_step_name(self, step: Any) -> str:
        steps = (self.build.get("spec") or {}).get("steps") or []
        if isinstance(step, int) and 0 <= step < len(steps) and isinstance(steps[step], dict):
            return str(steps[step].get("name") or "")
        return ""

    def _step_name(self, data: dict[str, Any]) -> str:
        step = data.get("step")
        name = data.get("name") or self._spec_step_name(step)
        if isinstance(step, int) and self.steps_total:
            # Steps may be numbered from 0 or 1; show 1-based, never past the total.
            shown = step + 1 if step < self.steps_total else step
            number = f"{shown}/{self.steps_total}"
        else:
            number = str(step) if step is not None else ""
        return " ".join(p for p in (f"step {number}".strip(), str(name)) if p)

    def _apply_event(self, event_type: str, data: dict[str, Any]) -> str:
        """Update the state from one event; return the note the log shows for it ("" none)."""
        if event_type == EventType.STATUS:
            status = str(data.get("status") or "")
            if status:
                self.status = status
            if self.terminal:
                self.step_label = ""
                return _note("■", f"build {status}")
            return ""
        if event_type == EventType.STEP_STARTED:
            self.step_index = data.get("step")
            self.step_label = self._step_name(data)
            return _note("▶", self.step_label)
        if event_type == EventType.STEP_FINISHED:
            code = data.get("exit_code")
            mark = "✓" if code in (0, None) else "✗"
            suffix = "" if code in (0, None) else f" (exit code {code})"
            return _note(mark, self._step_name(data) + " finished" + suffix)
        if event_type:
            return _note("•", event_type.replace("_", " "))
        return ""

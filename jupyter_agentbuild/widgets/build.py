"""BuildWidget: a live view of one build (ipywidgets 8, no custom JavaScript).

Updates come from :meth:`BuildWidget.run`, a coroutine that reads the build's WebSocket
stream. :meth:`BuildWidget.follow` starts it as a task on the kernel's running loop, so
the widget updates while the kernel is idle; ``%%agentbuild --wait`` runs it on the
client's private loop instead while the cell blocks. Either way widget values are set
explicitly (never ``with output:`` from a task) and at most once per ``interval``.
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import aclosing
from typing import Any

import ipywidgets as w

from ..client import AgentBuildError, AsyncClient, Build, Client, Conflict, Entry, ServerInfo
from ..client.formatting import format_duration
from ..vocabulary import PreviewState
from . import html
from .preview import PreviewPanel
from .tables import artifact_links
from .view_state import BuildState, LogBuffer, Throttle

#: The tasks of widgets following a build: asyncio keeps only weak references to tasks, so
#: a follower nobody holds could be collected mid-run. A task leaves the set when it ends.
FOLLOWERS: set[asyncio.Task[Any]] = set()
PREVIEW_POLL = 0.5
CATCH_UP_CHECK = 0.5  # seconds between "how far behind are we?" checks while flooded


class BuildWidget(w.VBox):  # type: ignore[misc]
    """Name, status badge, elapsed time, current step, cancel button, log, artifacts, preview."""

    def __init__(
        self,
        build: Build,
        server: ServerInfo,
        *,
        block_lines: int = 100,
        max_blocks: int = 20,
        interval: float = 0.1,
        log_height: str = "400px",
    ) -> None:
        self.build_id = build.id
        self.server = server
        self.build_state = BuildState(build)
        self.log_buffer = LogBuffer(block_lines, max_blocks)
        self.throttle = Throttle(interval)
        self._flush_handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._full_log_href = (
            server.browser_path("api", "builds", self.build_id, "logs") + "?format=text"
        )

        header = self._make_header()
        self._make_log(max_blocks, log_height)
        self.artifacts_html = w.HTML(layout=w.Layout(margin="0"))
        self.artifacts_html.add_class("agentbuild-artifacts")
        self.preview = PreviewPanel(server, build.id)
        super().__init__(
            [
                header,
                self.message_html,
                self.hidden_html,
                self.log_box,
                self.artifacts_html,
                self.preview,
            ]
        )
        self.add_class("agentbuild-build")
        self.render_header()

    def _make_header(self) -> w.HBox:
        """Name, status badge, elapsed time, current step and the cancel button, in a row."""
        self.title_html = w.HTML(layout=w.Layout(margin="0 0.5em 0 0"))
        self.badge_html = w.HTML(layout=w.Layout(margin="0 0.5em 0 0"))
        self.badge_html.add_class("agentbuild-status")
        self.elapsed_label = w.Label(layout=w.Layout(margin="0 0.5em 0 0"))
        self.step_text = w.Label(layout=w.Layout(margin="0 0.5em 0 0"))
        self.cancel_button = w.Button(
            description="Cancel", icon="stop", button_style="danger", layout=w.Layout(width="auto")
        )
        self.cancel_button.on_click(self._on_cancel)
        return w.HBox(
            [
                self.title_html,
                self.badge_html,
                self.elapsed_label,
                self.step_text,
                self.cancel_button,
            ],
            layout=w.Layout(align_items="center", flex_flow="row wrap"),
        )

    def _make_log(self, max_blocks: int, log_height: str) -> None:
        """The message line, the hidden-lines note and the box of log blocks."""
        self.message_html = w.HTML(layout=w.Layout(margin="0"))
        self.hidden_html = w.HTML(layout=w.Layout(margin="0"))
        self._blocks = [w.HTML(layout=w.Layout(margin="0")) for _ in range(max_blocks)]
        for block in self._blocks:
            block.add_class("agentbuild-log-block")
        # column-reverse keeps the scroll position pinned to the newest line.
        self.log_box = w.Box(
            [],
            layout=w.Layout(
                display="flex",
                flex_flow="column-reverse",
                max_height=log_height,
                overflow="auto",
                border="1px solid var(--jp-border-color2, #e0e0e0)",
            ),
        )
        self.log_box.add_class("agentbuild-log")

    # -- rendering --------------------------------------------------------------------------

    def render_header(self) -> None:
        build = self.build_state.build
        self.title_html.value = html.title(build.get("name"), self.build_id)
        self.badge_html.value = html.badge(self.build_state.status)
        if build.get("finished_at") or not self.build_state.terminal:
            # Once finished, the clock stops at the last value until the record says when.
            self.elapsed_label.value = format_duration(build.elapsed())
        self.step_text.value = self.build_state.step_label
        if self.build_state.terminal:
            self.cancel_button.layout.display = "none"

    def flush(self) -> None:
        """Send what changed since the last flush to the front end."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self.throttle.mark()
        for block in self.log_buffer.flush():
            self._blocks[block.index % len(self._blocks)].value = html.pre(block.html())
        if self.log_buffer.layout_changed:
            count = len(self._blocks)
            self.log_box.children = tuple(
                self._blocks[b.index % count] for b in reversed(self.log_buffer.blocks)
            )
        self.hidden_html.value = html.hidden_lines(self.log_buffer.hidden, self._full_log_href)
        self.render_header()

    def request_flush(self) -> None:
        """Flush now if the throttle allows, else once the interval has passed."""
        if self._flush_handle is not None:
            return
        delay = self.throttle.delay()
        if delay <= 0:
            self.flush()
        else:
            self._flush_handle = asyncio.get_running_loop().call_later(delay, self.flush)

    def add_entries(self, entries: list[Entry]) -> None:
        self.build_state.apply(entries, self.log_buffer)

    def set_build(self, build: Build) -> None:
        self.build_state.update_build(build)

    def show_message(self, text: str, *, error: bool = True) -> None:
        self.message_html.value = html.message(text, error=error)

    # -- following the stream ---------------------------------------------------------------

    async def run(self) -> Build:
        """Follow the build to its end (or return at once if it has ended); return it."""
        async with AsyncClient(server=self.server) as client:
            build = await client.get(self.build_id)
            self.set_build(build)
            start = self.build_state.last_seq  # resuming (after an interrupted --wait)
            if not start:  # first run: a long log starts from its last screenful
                start = max(0, build.last_seq - self.log_buffer.capacity)
                self.log_buffer.skip(start)
                self.build_state.last_seq = start
            if build.terminal:
                async for page in client.log_pages(
                    self.build_id, after=start, limit=self.log_buffer.capacity
                ):
                    self.add_entries(page)
            else:
                ticker = asyncio.create_task(self._tick())
                try:
                    await self._follow(client, start)
                finally:
                    ticker.cancel()
                    if self._flush_handle is not None:
                        self._flush_handle.cancel()
                        self._flush_handle = None
                build = await client.get(self.build_id)
                self.set_build(build)
            self.flush()
            await self._extras(client, build)
            self.flush()
            return build

    async def _follow(self, client: AsyncClient, after: int) -> None:
        """Read the stream to its end, at most about one screenful per flush interval.

        A build that logs faster than that is not read in full: when the reader falls
        more than two screenfuls behind, it re-opens the stream near the end and counts
        what it skipped as hidden. The kernel's work is bounded by what can be shown, not
        by how fast the build writes.
        """
        capacity = self.log_buffer.capacity
        loop = asyncio.get_running_loop()
        while True:
            skip_to = None
            checked = float("-inf")
            async with aclosing(client.stream(self.build_id, after=after)) as stream:
                received = 0
                async for batch in stream:
                    self.add_entries(batch)
                    received += len(batch)
                    self.request_flush()
                    await asyncio.sleep(0)  # let the kernel handle its own messages
                    if received < capacity:
                        continue
                    # More than a screenful since the last flush: pause until the next one.
                    await asyncio.sleep(self.throttle.delay())
                    self.flush()
                    received = 0
                    if loop.time() - checked < CATCH_UP_CHECK:
                        continue
                    checked = loop.time()
                    latest = (await client.get(self.build_id)).last_seq
                    if latest - self.build_state.last_seq > 2 * capacity:
                        skip_to = latest - capacity
                        break
            if skip_to is None:
                return
            skipped = skip_to - self.build_state.last_seq
            self.log_buffer.skip(skipped)
            self.log_buffer.add_note(html.skipped_note(skipped))
            self.build_state.last_seq = after = skip_to

    async def _tick(self) -> None:
        while not self.build_state.terminal:
            await asyncio.sleep(1.0)
            self.render_header()

    async def _extras(self, client: AsyncClient, build: Build) -> None:
        summary = build.get("artifacts") or {}
        if summary.get("count"):
            self.show_artifacts(await client.artifacts(self.build_id), summary.get("total_size"))
        spec_preview = (build.get("spec") or {}).get("preview") or {}
        path = str(spec_preview.get("path") or "/")
        deadline = asyncio.get_running_loop().time() + float(
            spec_preview.get("ready_timeout") or 60
        )
        while (build.get("preview") or {}).get("state") == PreviewState.STARTING:
            self.preview.update(build.get("preview"), path)
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(PREVIEW_POLL)
            build = await client.get(self.build_id)
        self.preview.update(build.get("preview"), path)

    def show_artifacts(self, artifacts: list[Any], total_size: int | None) -> None:
        hrefs, archives = artifact_links(self.server, self.build_id, artifacts)
        self.artifacts_html.value = html.artifacts_table(artifacts, total_size, hrefs, archives)

    async def _guarded_run(self) -> None:
        try:
            await self.run()
        except asyncio.CancelledError:
            raise
        except AgentBuildError as exc:
            self.flush()
            self.show_message(f"stopped following the build: {exc}")
        except Exception as exc:  # never let a background task die silently
            self.flush()
            self.show_message(f"stopped following the build: {type(exc).__name__}: {exc}")

    def follow(self) -> None:
        """Start following in the background: a task on the running loop (the kernel's), or,
        where no loop runs (plain Python), a daemon thread with its own loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            threading.Thread(target=asyncio.run, args=(self._guarded_run(),), daemon=True).start()
            return
        self._loop = loop
        self._task = loop.create_task(self._guarded_run())
        FOLLOWERS.add(self._task)
        self._task.add_done_callback(FOLLOWERS.discard)

    @property
    def task(self) -> asyncio.Task[Any] | None:
        return self._task

    # -- controls -----------------------------------------------------------------------------

    def _on_cancel(self, _button: Any = None) -> None:
        self.cancel_button.disabled = True
        self.cancel_button.description = "Cancelling…"
        try:
            with Client(server=self.server) as client:
                client.cancel(self.build_id)
        except Conflict:
            pass  # it has finished already
        except AgentBuildError as exc:
            self.show_message(f"cancel failed: {exc}")
            self.cancel_button.disabled = False
            self.cancel_button.description = "Cancel"

    def close(self) -> None:
        """Stop following and close every part of the widget."""
        if getattr(self, "_closed", True):
            return  # closed already, or __init__ failed before the parts existed
        self._closed = True
        if self._task is not None and self._loop is not None and not self._task.done():
            self._loop.call_soon_threadsafe(self._task.cancel)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self.preview.close()
        for child in self._blocks:
            child.close()
        for child in (
            self.title_html,
            self.badge_html,
            self.elapsed_label,
            self.step_text,
            self.cancel_button,
        ):
            child.close()
        for child in (self.message_html, self.hidden_html, self.log_box, self.artifacts_html):
            child.close()
        super().close()

"""A command's output on its way to an :data:`~.base.OutputSink`, for every sandbox.

Each stream is split into lines (:class:`~.lines.LineSplitter`), and the streams take
turns: one sink call at a time, so a slow consumer holds both back (back-pressure), and
stdout and stderr batches never interleave inside a call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from ..vocabulary import Stream
from .base import OutputSink
from .lines import Batch, LineSplitter


class OutputRelay:
    """Splits one command's stdout and stderr into line batches and passes them on."""

    def __init__(
        self,
        max_line_bytes: int,
        on_output: OutputSink,
        skip: Mapping[str, int] | None = None,
    ) -> None:
        """``skip``: line pieces per stream to drop before passing any on (a re-attached
        E2B step replays its output from the start: the same bytes split into the same
        pieces, of which a previous server already stored these)."""
        self._on_output = on_output
        self._splitters = {stream: LineSplitter(max_line_bytes) for stream in Stream}
        self._skip = dict(skip or {})
        self._turn = asyncio.Lock()

    async def feed(self, stream: Stream, data: bytes) -> None:
        """Pass on the complete lines (or full pieces) ``data`` ends."""
        await self._send(stream, self._splitters[stream].feed(data))

    async def finish(self, stream: Stream, data: bytes = b"") -> None:
        """``stream`` ended (after ``data``): pass on what is left of it."""
        splitter = self._splitters[stream]
        await self._send(stream, splitter.feed(data) + splitter.finish())

    async def _send(self, stream: Stream, batches: list[Batch]) -> None:
        for lines, continued in batches:
            skip = self._skip.get(stream, 0)
            if skip:
                self._skip[stream] = max(0, skip - len(lines))
                lines = lines[skip:]
                if not lines:
                    continue
            async with self._turn:
                await self._on_output(stream, lines, continued)


__all__ = ["OutputRelay"]

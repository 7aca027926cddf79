"""One command running in the VM, as the E2B sandbox follows it: its SDK handle, the end
marks of its wrapper, its output split into lines."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Mapping
from typing import Any

from ..base import OutputSink
from ..lines import LineSplitter
from .scripts import EndScanner


def bash_script(command: str) -> str:
    return "exec bash --noprofile --norc -c " + shlex.quote("set -eo pipefail\n" + command)


class CommandRun:
    """One command running in the VM: its handle, its end marks, its output splitters."""

    def __init__(
        self,
        marker: str,
        max_line_bytes: int,
        on_output: OutputSink,
        skip: Mapping[str, int] | None = None,
    ) -> None:
        self.marker = marker
        self.on_output = on_output
        self.splitters = {s: LineSplitter(max_line_bytes) for s in ("stdout", "stderr")}
        self.scanners = {s: EndScanner(marker) for s in ("stdout", "stderr")}
        #: Line pieces per stream already stored by a previous server (a re-attached step
        #: replays its output from the start: the same bytes split into the same pieces).
        self.skip = dict(skip or {})
        #: Set once both streams carried the wrapper's end mark: the step's shell exited.
        self.ended = asyncio.Event()
        self.lock = asyncio.Lock()
        self.handle: Any = None
        self.waited: asyncio.Future[int] | None = None
        #: What our own output sink raised (the store refusing logs, say): the SDK ends the
        #: stream on it, and the step reports it rather than a lost connection.
        self.error: BaseException | None = None
        #: Set when ``run_step`` is over, however it ended (what ``cancel`` waits for: the
        #: SDK's own wait can hang on a stalled stream).
        self.done = asyncio.Event()

    @property
    def status(self) -> int | None:
        """The step shell's exit status, from its end mark."""
        return self.scanners["stdout"].status

    async def emit(self, stream: str, text: str) -> None:
        try:
            text = self.scanners[stream].feed(text)
            if all(s.status is not None for s in self.scanners.values()):
                self.ended.set()
            await self._send(stream, self.splitters[stream].feed(_bytes(text)))
        except Exception as exc:
            self.error = exc
            raise

    async def _send(self, stream: str, batches: list[tuple[list[str], bool]]) -> None:
        for lines, continued in batches:
            skip = self.skip.get(stream, 0)
            if skip:
                self.skip[stream] = max(0, skip - len(lines))
                lines = lines[skip:]
                if not lines:
                    continue
            async with self.lock:
                await self.on_output(stream, lines, continued)

    async def flush(self) -> None:
        for stream, splitter in self.splitters.items():
            held = self.scanners[stream].finish()
            await self._send(stream, splitter.feed(_bytes(held)) + splitter.finish())


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


async def exit_code_of(handle: Any) -> int:
    """The command's exit status (the SDK raises for a non-zero one)."""
    from e2b import CommandExitException

    try:
        result = await handle.wait()
    except CommandExitException as exc:
        return int(exc.exit_code)
    return int(result.exit_code)

"""One command running in the VM, as the E2B sandbox follows it: its SDK handle, the end
marks of its wrapper, its output split into lines."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Mapping
from typing import Any

from ...vocabulary import Stream
from ..base import OutputSink
from ..relay import OutputRelay
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
        #: ``skip``: line pieces per stream already stored by a previous server.
        self.relay = OutputRelay(max_line_bytes, on_output, skip)
        self.scanners = {stream: EndScanner(marker) for stream in Stream}
        #: Set once both streams carried the wrapper's end mark: the step's shell exited.
        self.ended = asyncio.Event()
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
        return self.scanners[Stream.STDOUT].status

    async def emit(self, stream: Stream, text: str) -> None:
        """One piece of output from the SDK: end marks taken out, the rest passed on."""
        try:
            text = self.scanners[stream].feed(text)
            if all(s.status is not None for s in self.scanners.values()):
                self.ended.set()
            await self.relay.feed(stream, _bytes(text))
        except Exception as exc:
            self.error = exc
            raise

    async def flush(self) -> None:
        """Pass on what each stream still holds (the command is over)."""
        for stream, scanner in self.scanners.items():
            await self.relay.finish(stream, _bytes(scanner.finish()))


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

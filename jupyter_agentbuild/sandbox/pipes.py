"""Reading a step's pipes without blocking the loop, and waiting for its exit.

Once the step's processes are gone the readers switch to bounded reading, so a pipe held
open by a process that could not be killed never hangs the step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator

log = logging.getLogger(__name__)

_CHUNK = 65536
#: After a step's processes are gone, a pipe still open (held by a process we could not
#: kill) is waited on for at most this long between reads...
_DRAIN_IDLE = 1.0
#: ...and read for at most this many more bytes (legitimate leftovers are what fits in
#: the pipe buffer, at most ``/proc/sys/fs/pipe-max-size``, 1 MiB by default).
_DRAIN_MAX_BYTES = 4 * 1024 * 1024


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class DrainMode:
    """Switches the pipe readers to bounded reading once the processes are gone."""

    def __init__(self) -> None:
        self.active = False
        self._waiters: set[asyncio.Future[None]] = set()

    def start(self) -> None:
        self.active = True
        for fut in self._waiters:
            _wake(fut)

    @contextlib.contextmanager
    def watch(self, fut: asyncio.Future[None]) -> Iterator[None]:
        self._waiters.add(fut)
        try:
            yield
        finally:
            self._waiters.discard(fut)


class PipeReader:
    """Non-blocking reads of one pipe: wait for data only when there is none."""

    def __init__(self, fd: int, drain: DrainMode) -> None:
        self.fd = fd
        self.drain = drain
        self.after_drain = 0
        os.set_blocking(fd, False)

    async def read(self) -> bytes:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = os.read(self.fd, _CHUNK)
            except BlockingIOError:
                pass
            except OSError:
                return b""
            else:
                if self.drain.active:
                    self.after_drain += len(data)
                    if self.after_drain > _DRAIN_MAX_BYTES:
                        log.warning("sandbox: output still coming after the step ended; cut")
                        return b""
                return data
            fut: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self.fd, _wake, fut)
            try:
                with self.drain.watch(fut):
                    if not self.drain.active:
                        await fut  # woken by data, EOF, or the drain starting
                    else:
                        try:
                            await asyncio.wait_for(fut, _DRAIN_IDLE)
                        except TimeoutError:
                            log.warning("sandbox: a pipe stayed open after the step ended")
                            return b""
            finally:
                loop.remove_reader(self.fd)


async def wait_exit(proc: subprocess.Popen[bytes]) -> int:
    """Wait for ``proc`` to exit (pidfd where available, else polling) and reap it."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd (old kernel): poll
        while True:
            code = proc.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.05)
    try:
        while proc.poll() is None:
            fut: asyncio.Future[None] = loop.create_future()
            loop.add_reader(pidfd, _wake, fut)
            try:
                await fut
            finally:
                loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
    return proc.returncode

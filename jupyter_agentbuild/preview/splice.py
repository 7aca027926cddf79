"""A response body moved from the preview's socket to the browser's inside the kernel.

A body that needs no rewriting (one of known length: always the case on the own origin)
would otherwise cross Python twice per byte (``recv_into`` a buffer, ``send`` from it):
on a 1 GiB body that copying is most of the proxy's time. On Linux, ``os.splice`` moves
the bytes socket -> pipe -> socket without them ever reaching this process's memory.
Back-pressure stays: the pipe holds at most :data:`PIPE_SIZE` bytes, and nothing more
is read from the preview until the browser's socket has taken them.

For the length of the body, both connections are taken from tornado (their event
handlers removed, so it neither reads the preview's bytes nor watches the browser's
socket) and handed back in the state of a fresh stream; their own file descriptors are
duplicated, so a stream closed meanwhile (the preview stops, the server shuts down)
never leaves a registration on a number the kernel may give to another socket. Tornado
offers no public way to do this: :func:`spliceable` checks every internal it relies on
and answers False when one is missing, and the caller then copies as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import platform
import socket
import sys
from collections.abc import Callable
from typing import Any

from tornado import iostream

from .origin import is_loopback_ip

#: The pipe between the two sockets: what the kernel holds of a body in transit.
PIPE_SIZE = 1 << 20
#: The browser's socket send buffer while a body is spliced into it, and the preview's
#: receive buffer (the kernel doubles both for its bookkeeping). Left to autotuning, on a
#: 1 GiB body they grow to 4 MiB and 32 MiB: the bytes in flight no longer fit the CPU
#: caches and the body moved at a third of the speed a direct reader gets; bounded, at
#: 0.6-0.7 of it (2-core machine, ``benchmarks/bench_proxy.py``; a send buffer of 1 MiB
#: was as slow as autotuning). Applied only to a socket whose peer is on this machine
#: (a local preview; a browser behind a local proxy or tunnel). Both are restored when
#: the body is through.
SEND_BUFFER = 1 << 18
RECEIVE_BUFFER = 1 << 20
#: How often (s) a relay waiting for a socket checks that neither stream was closed.
CLOSED_CHECK = 1.0

_SPLICE = getattr(os, "splice", None)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux), absent from Python's fcntl before 3.10
#: SO_BUF_LOCK (Linux 5.14; Python's socket module names it from 3.13 on): its value in
#: the generic socket ABI, known here only for the architectures that use that ABI.
_SO_BUF_LOCK: int | None = getattr(
    socket,
    "SO_BUF_LOCK",
    72 if sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64") else None,
)
_SNDBUF_LOCK = 1  # SOCK_SNDBUF_LOCK: the send buffer's size was set, not autotuned
_RCVBUF_LOCK = 2  # SOCK_RCVBUF_LOCK: the same for the receive buffer


class SpliceError(Exception):
    """The body could not be moved: ``client_gone`` when the browser left, otherwise the
    preview closed its connection before the end of the body, or stopped answering."""

    def __init__(self, message: str, *, client_gone: bool = False, timed_out: bool = False):
        super().__init__(message)
        self.client_gone = client_gone
        self.timed_out = timed_out


def spliceable(upstream: iostream.IOStream, client: iostream.IOStream) -> bool:
    """Can a body go from ``upstream`` to ``client`` by :func:`splice_body`? Plain
    sockets (TLS must pass through Python), nothing buffered by tornado either way, and
    the tornado internals this module hands the streams back through."""
    if _SPLICE is None:
        return False
    for stream in (upstream, client):
        if type(stream) is not iostream.IOStream or stream.closed():
            return False
        if not hasattr(stream, "_state") or not hasattr(stream.io_loop, "remove_handler"):
            return False
    return getattr(upstream, "_read_buffer_size", None) == 0 and not (
        upstream.reading() or client.writing()
    )


async def splice_body(
    upstream: iostream.IOStream,
    client: iostream.IOStream,
    length: int,
    *,
    moved: Callable[[int], None],
    idle_timeout: float,
) -> None:
    """Move ``length`` bytes from ``upstream`` to ``client``; ``moved(n)`` after each
    piece reaches the browser's socket. :class:`SpliceError` when either side fails or
    no byte moves for ``idle_timeout`` seconds."""
    with (
        _taken(upstream) as source,
        _taken(client) as sink,
        bounded_send_buffer(client.socket, SEND_BUFFER),
        bounded_receive_buffer(upstream.socket, RECEIVE_BUFFER),
        _pipe() as (pipe_r, pipe_w),
    ):
        relay = _Relay(source, sink, pipe_r, pipe_w, length)
        while relay.left or relay.in_pipe:
            if relay.step(moved):
                continue
            await relay.wait(idle_timeout, lambda: upstream.closed() or client.closed())


class _Relay:
    """The two splices and the wait between them."""

    def __init__(self, source: int, sink: int, pipe_r: int, pipe_w: int, length: int) -> None:
        self.source, self.sink = source, sink
        self.pipe_r, self.pipe_w = pipe_r, pipe_w
        self.left = length
        self.in_pipe = 0
        #: The last read found the pipe full (its slots hold pieces of any size, so its
        #: byte count does not tell): wait for the browser, not for the preview.
        self.pipe_full = False

    def step(self, moved: Callable[[int], None]) -> bool:
        """Fill the pipe from the preview, empty it into the browser; did anything move?"""
        assert _SPLICE is not None
        progress = False
        while self.left and not self.pipe_full:
            try:
                got = _SPLICE(self.source, self.pipe_w, min(self.left, PIPE_SIZE), flags=_FLAGS)
            except BlockingIOError:
                self.pipe_full = self.in_pipe > 0
                break
            except OSError as exc:
                raise SpliceError(f"reading the preview's answer failed ({exc})") from None
            if got == 0:
                raise SpliceError("the preview closed the connection in the middle of a response")
            self.left -= got
            self.in_pipe += got
            progress = True
        if self.in_pipe:
            try:
                sent = _SPLICE(self.pipe_r, self.sink, self.in_pipe, flags=_FLAGS)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                    raise SpliceError("the browser went away", client_gone=True) from None
                raise SpliceError(f"writing to the browser failed ({exc})") from None
            if sent > 0:
                self.in_pipe -= sent
                self.pipe_full = False
                moved(sent)
                progress = True
        return progress

    async def wait(self, idle_timeout: float, closed: Callable[[], bool]) -> None:
        """Until the preview's socket is readable (room in the pipe) or the browser's is
        writable (bytes in the pipe). One future and one timer per wait: this runs once
        per piece of the body."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + idle_timeout
        reading = bool(self.left) and not self.pipe_full
        writing = bool(self.in_pipe)
        while True:
            if closed():
                raise SpliceError("the connection was closed", client_gone=True)
            left = deadline - loop.time()
            if left <= 0:
                raise SpliceError("no progress in time", timed_out=True)
            ready: asyncio.Future[bool] = loop.create_future()
            if reading:
                loop.add_reader(self.source, _settle, ready, True)
            if writing:
                loop.add_writer(self.sink, _settle, ready, True)
            timer = loop.call_later(min(left, CLOSED_CHECK), _settle, ready, False)
            try:
                if await ready:
                    return
            finally:
                timer.cancel()
                if reading:
                    loop.remove_reader(self.source)
                if writing:
                    loop.remove_writer(self.sink)


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


@contextlib.contextmanager
def _taken(stream: iostream.IOStream) -> Any:
    """The stream's socket, duplicated, with tornado's handler removed; on exit, the
    stream is as a fresh one (its next read or write registers it again)."""
    stream.io_loop.remove_handler(stream.socket)
    stream._state = None  # type: ignore[attr-defined]
    own = os.dup(stream.socket.fileno())
    try:
        yield own
    finally:
        os.close(own)


@contextlib.contextmanager
def bounded_send_buffer(sock: socket.socket, size: int) -> Any:
    """``sock``'s send buffer at most ``size`` meanwhile, then as it was (when its peer
    is on this machine)."""
    with _bounded_buffer(sock, socket.SO_SNDBUF, _SNDBUF_LOCK, size):
        yield


@contextlib.contextmanager
def bounded_receive_buffer(sock: socket.socket, size: int) -> Any:
    """``sock``'s receive buffer at most ``size`` meanwhile, then as it was (when its
    peer is on this machine)."""
    with _bounded_buffer(sock, socket.SO_RCVBUF, _RCVBUF_LOCK, size):
        yield


@contextlib.contextmanager
def _bounded_buffer(sock: socket.socket, option: int, lock: int, size: int) -> Any:
    """Setting a buffer's size also stops the kernel's autotuning of it (which grows a
    send buffer to 4 MiB, a receive buffer to 32 MiB, within the first megabytes of a
    body); afterwards the old size is set back and, where the kernel tells which sizes
    are fixed (``SO_BUF_LOCK``, Linux 5.14), the autotuning too. A buffer the application
    fixed at a smaller size is left alone. On an older kernel setting a size would fix it
    for good, so only a buffer already grown beyond ``size`` is bounded (it keeps its
    size afterwards, fixed). A peer across a network is left to autotuning: there the
    round trip, not the caches, decides, and autotuning keeps the pipe full."""
    if not peer_is_loopback(sock):
        yield
        return
    try:
        before = sock.getsockopt(socket.SOL_SOCKET, option)
    except OSError:  # a socket that refuses: the body moves all the same
        before = 0
    locks = buffer_locks(sock)
    # the kernel reports (and keeps) twice what is set
    bounded = before > 2 * size or (locks is not None and not locks & lock)
    with contextlib.suppress(OSError):
        if bounded:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if bounded:
                sock.setsockopt(socket.SOL_SOCKET, option, max(before // 2, 1))
                if locks is not None and _SO_BUF_LOCK is not None:
                    sock.setsockopt(socket.SOL_SOCKET, _SO_BUF_LOCK, locks)


def peer_is_loopback(sock: socket.socket) -> bool:
    """Is ``sock`` a TCP connection to a loopback address (a peer on this machine)?"""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        return is_loopback_ip(sock.getpeername()[0])
    except OSError:
        return False


def buffer_locks(sock: socket.socket) -> int | None:
    """Which of ``sock``'s buffer sizes are fixed rather than autotuned (``SO_BUF_LOCK``
    bits), or None where the kernel cannot say."""
    if _SO_BUF_LOCK is None:
        return None
    try:
        return sock.getsockopt(socket.SOL_SOCKET, _SO_BUF_LOCK)
    except OSError:
        return None


@contextlib.contextmanager
def _pipe() -> Any:
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):
            import fcntl

            fcntl.fcntl(write_end, _F_SETPIPE_SZ, PIPE_SIZE)
        yield read_end, write_end
    finally:
        os.close(read_end)
        os.close(write_end)


__all__ = [
    "PIPE_SIZE",
    "RECEIVE_BUFFER",
    "SEND_BUFFER",
    "bounded_receive_buffer",
    "bounded_send_buffer",
    "buffer_locks",
    "peer_is_loopback",
    "SpliceError",
    "splice_body",
    "spliceable",
]

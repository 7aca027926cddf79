"""Client: the blocking twin of AsyncClient.

Its I/O runs on one private event loop in a daemon thread, so it works where a loop is
already running (an IPython kernel runs its own asyncio loop in the main thread). Ctrl-C
(a kernel interrupt) while a call blocks cancels that call's task and raises
``KeyboardInterrupt`` as usual.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from .aio import AsyncClient, BuildList, EntryBatch, RecordList
from .connection import ServerInfo
from .models import Build, Entry, Record

T = TypeVar("T")


class LoopThread:
    """An asyncio loop in a daemon thread, shared by every :class:`Client` of the process."""

    _shared: LoopThread | None = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="agentbuild-client", daemon=True
        )
        self._thread.start()

    @classmethod
    def shared(cls) -> LoopThread:
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop and block for its result."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("Client called from its own I/O thread; use AsyncClient there")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # KeyboardInterrupt: stop the task too
            raise

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Drive an async iterator from blocking code."""

        async def step() -> tuple[bool, T | None]:
            try:
                return True, await agen.__anext__()
            except StopAsyncIteration:
                return False, None

        try:
            while True:
                more, item = self.run(step())
                if not more:
                    return
                yield item  # type: ignore[misc]
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                try:
                    self.run(aclose())
                except RuntimeError:
                    pass  # still unwinding from a cancelled step: it closes itself


class Client:
    """Blocking client for the agentbuild API. ``Client()`` finds the server itself.

    Methods mirror :class:`AsyncClient`: ``start``, ``get``, ``list``, ``wait``, ``logs``,
    ``cancel``, ``delete``, ``artifacts``, ``download``, ``download_all``, ``preview_url``,
    ``preview_stop``, ``restart_preview``.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        server: ServerInfo | None = None,
    ) -> None:
        self._runner = LoopThread.shared()
        self.aio = AsyncClient(url, token, timeout=timeout, server=server)
        self.server = self.aio.server

    def __repr__(self) -> str:
        return f"Client(url={self.server.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._runner.run(self.aio.aclose())

    def start(self, spec: Mapping[str, Any] | None = None, **fields: Any) -> Build:
        return self._runner.run(self.aio.start(spec, **fields))

    def get(self, build_id: str) -> Build:
        return self._runner.run(self.aio.get(build_id))

    def list(
        self,
        status: str | None = None,
        limit: int = 50,
        before: str | None = None,
        q: str | None = None,
    ) -> BuildList:
        """Newest first, up to ``limit``; ``status`` and ``q`` (name or id contains it,
        ignoring case) filter on the server: see :meth:`AsyncClient.list`."""
        return self._runner.run(self.aio.list(status, limit, before, q))

    def wait(self, build_id: str, timeout: float | None = None) -> Build:
        return self._runner.run(self.aio.wait(build_id, timeout))

    def logs(
        self, build_id: str, after: int = 0, follow: bool = False, limit: int = 1000
    ) -> Iterator[Entry]:
        """Entries one by one, fetched a page (or a stream frame) per thread hop."""
        batches = self.stream(build_id, after) if follow else self.log_pages(build_id, after, limit)
        for batch in batches:
            yield from batch

    def log_pages(self, build_id: str, after: int = 0, limit: int = 1000) -> Iterator[EntryBatch]:
        return self._runner.iterate(self.aio.log_pages(build_id, after, limit))

    def stream(self, build_id: str, after: int = 0) -> Iterator[EntryBatch]:
        return self._runner.iterate(self.aio.stream(build_id, after))

    def log_page(self, build_id: str, after: int = 0, limit: int = 1000) -> Record:
        return self._runner.run(self.aio.log_page(build_id, after, limit))

    def cancel(self, build_id: str) -> Build:
        return self._runner.run(self.aio.cancel(build_id))

    def delete(self, build_id: str) -> None:
        self._runner.run(self.aio.delete(build_id))

    def artifacts(self, build_id: str) -> RecordList:
        return self._runner.run(self.aio.artifacts(build_id))

    def download(self, build_id: str, path: str, dest: str | os.PathLike[str] = ".") -> Path:
        return self._runner.run(self.aio.download(build_id, path, dest))

    def download_all(
        self, build_id: str, dest: str | os.PathLike[str], format: str = "zip"
    ) -> Path:
        return self._runner.run(self.aio.download_all(build_id, dest, format))

    def preview_url(self, build_id: str, *, path: bool = False) -> str:
        """The preview's absolute URL: its own origin, or ``path=True`` the path proxy."""
        return self._runner.run(self.aio.preview_url(build_id, path=path))

    def preview_stop(self, build_id: str) -> None:
        self._runner.run(self.aio.preview_stop(build_id))

    def restart_preview(self, build_id: str) -> Build:
        """A fresh preview process at the same URLs (see :meth:`AsyncClient.restart_preview`)."""
        return self._runner.run(self.aio.restart_preview(build_id))

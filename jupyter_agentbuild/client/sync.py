"""Client: the blocking twin of AsyncClient, generated from it method by method.

Its I/O runs on one private event loop in a daemon thread (:class:`LoopThread`), so it works
where a loop is already running (an IPython kernel runs its own asyncio loop in the main
thread). Ctrl-C (a kernel interrupt) while a call blocks cancels that call's task and raises
``KeyboardInterrupt`` as usual.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType

from .aio import AsyncClient
from .blocking import Blocking, BlockingIterator, LoopThread
from .connection import ServerInfo
from .records import Entry

__all__ = ["Client", "LoopThread"]


class Client:
    """Blocking client for the agentbuild API. ``Client()`` finds the server itself.

    Every method is the blocking twin of the :class:`AsyncClient` method of the same name
    (``close`` for ``aclose``), with its parameters and documentation; async generators
    become iterators. ``client.aio`` is the :class:`AsyncClient` underneath.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        server: ServerInfo | None = None,
    ) -> None:
        self.runner = LoopThread.shared()
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

    close = Blocking(AsyncClient.aclose)
    start = Blocking(AsyncClient.start)
    get = Blocking(AsyncClient.get)
    list = Blocking(AsyncClient.list)
    wait = Blocking(AsyncClient.wait)
    log_page = Blocking(AsyncClient.log_page)
    log_pages = BlockingIterator(AsyncClient.log_pages)
    stream = BlockingIterator(AsyncClient.stream)
    cancel = Blocking(AsyncClient.cancel)
    delete = Blocking(AsyncClient.delete)
    artifacts = Blocking(AsyncClient.artifacts)
    download = Blocking(AsyncClient.download)
    download_all = Blocking(AsyncClient.download_all)
    preview_url = Blocking(AsyncClient.preview_url)
    preview_stop = Blocking(AsyncClient.preview_stop)
    restart_preview = Blocking(AsyncClient.restart_preview)

    def logs(
        self, build_id: str, after: int = 0, follow: bool = False, limit: int = 1000
    ) -> Iterator[Entry]:
        # Written out rather than generated: entries are taken from the blocking iterator
        # a page (or a stream frame) at a time, one thread hop per batch, not per entry.
        batches = self.stream(build_id, after) if follow else self.log_pages(build_id, after, limit)
        for batch in batches:
            yield from batch

    logs.__doc__ = AsyncClient.logs.__doc__

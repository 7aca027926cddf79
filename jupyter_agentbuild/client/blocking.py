"""Blocking twins of :class:`AsyncClient` methods, made from the async method itself.

:class:`Client` declares ``start = Blocking(AsyncClient.start)``: the blocking method has the
async one's name, signature and docstring (``help(Client.wait)`` reads the same text as
``help(AsyncClient.wait)``), so the two clients cannot drift apart and there is one copy of
each method's documentation.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import types
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


class LoopThread:
    """An asyncio loop in a daemon thread, shared by every :class:`Client` of the process.

    A private loop, because the caller's thread may already run one (an IPython kernel runs
    its asyncio loop in the main thread), where ``asyncio.run`` is refused.
    """

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
        """The process's one loop thread, started on first use."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop and block for its result.

        An exception in the caller while it waits (Ctrl-C, a kernel interrupt) cancels the
        task too, so an interrupted call does not go on in the background.
        """
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("Client called from its own I/O thread; use AsyncClient there")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Drive an async iterator from blocking code, one thread hop per item."""

        async def next_item() -> tuple[bool, T | None]:
            try:
                return True, await agen.__anext__()
            except StopAsyncIteration:
                return False, None

        try:
            while True:
                more, item = self.run(next_item())
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


class HasAsyncTwin:
    """What a :class:`Blocking` method needs of the object it is bound to."""

    aio: Any
    runner: LoopThread


def blocking_signature(async_method: Callable[..., Any]) -> inspect.Signature:
    """The async method's signature, its return annotation as the blocking call returns:
    ``AsyncGenerator[X, None]`` becomes ``Iterator[X]`` (annotations are strings here)."""
    signature = inspect.signature(async_method)
    returns = signature.return_annotation
    if isinstance(returns, str) and returns.startswith("AsyncGenerator["):
        returns = f"Iterator[{returns.removeprefix('AsyncGenerator[').split(',')[0]}]"
    return signature.replace(return_annotation=returns)


def blocking_function(async_method: Callable[..., Any], name: str) -> Callable[..., Any]:
    """A plain function ``(client, *args, **kwargs)`` running ``async_method`` on the
    client's loop thread: a coroutine's result, or an async generator's items one by one."""
    if inspect.isasyncgenfunction(async_method):

        def method(self: HasAsyncTwin, *args: Any, **kwargs: Any) -> Any:
            return self.runner.iterate(async_method(self.aio, *args, **kwargs))

    else:

        def method(self: HasAsyncTwin, *args: Any, **kwargs: Any) -> Any:
            return self.runner.run(async_method(self.aio, *args, **kwargs))

    functools.update_wrapper(method, async_method)
    method.__name__ = name
    method.__qualname__ = f"Client.{name}"
    method.__signature__ = blocking_signature(async_method)  # type: ignore[attr-defined]
    del method.__wrapped__  # type: ignore[attr-defined]  # the signature above is the truth
    return method


class Blocking(Generic[P, R]):
    """A :class:`Client` attribute holding the blocking twin of one :class:`AsyncClient`
    method; typed so that ``Client().start(...)`` has the async method's parameters and
    returns what its coroutine returns."""

    def __init__(self, async_method: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]):
        self.async_method = async_method
        self.function = blocking_function(async_method, async_method.__name__)

    def __set_name__(self, owner: type, name: str) -> None:
        self.function = blocking_function(self.async_method, name)

    @overload
    def __get__(self, obj: None, owner: type) -> Callable[..., R]: ...

    @overload
    def __get__(self, obj: object, owner: type) -> Callable[P, R]: ...

    def __get__(self, obj: object | None, owner: type) -> Callable[..., R]:
        if obj is None:
            return self.function  # Client.start: the function, for help() and autodoc
        return types.MethodType(self.function, obj)


class BlockingIterator(Generic[P, T]):
    """As :class:`Blocking`, for an async generator method: the blocking twin returns an
    iterator over the same items."""

    def __init__(self, async_method: Callable[Concatenate[Any, P], AsyncIterator[T]]):
        self.async_method = async_method
        self.function = blocking_function(async_method, async_method.__name__)

    @overload
    def __get__(self, obj: None, owner: type) -> Callable[..., Iterator[T]]: ...

    @overload
    def __get__(self, obj: object, owner: type) -> Callable[P, Iterator[T]]: ...

    def __get__(self, obj: object | None, owner: type) -> Callable[..., Iterator[T]]:
        if obj is None:
            return self.function
        return types.MethodType(self.function, obj)

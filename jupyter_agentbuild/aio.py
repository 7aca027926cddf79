"""Small asyncio helpers the package repeats otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def first_of(*waits: Awaitable[Any], at_most: float | None = None) -> None:
    """Return once the first of ``waits`` is done, or after ``at_most`` seconds.

    Coroutines (``event.wait()``) are wrapped in tasks that are cancelled on return, so
    nothing is left waiting; futures and tasks passed in (a running step) are left as they
    are, done or not: the caller looks at them.
    """
    owned: list[asyncio.Future[Any]] = []
    futures: list[asyncio.Future[Any]] = []
    for wait in waits:
        if asyncio.isfuture(wait):
            futures.append(wait)
        else:
            waiter = asyncio.ensure_future(wait)
            owned.append(waiter)
            futures.append(waiter)
    try:
        await asyncio.wait(futures, timeout=at_most, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for mine in owned:
            mine.cancel()


__all__ = ["first_of"]

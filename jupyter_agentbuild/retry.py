"""Retrying a store call through a brief outage (a restarting database, a locked file)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def with_backoff(
    call: Callable[[], Awaitable[T]],
    *,
    patience: float,
    first_delay: float = 0.05,
    max_delay: float = 5.0,
) -> T:
    """``await call()`` until it succeeds, sleeping twice as long after each failure;
    once ``patience`` seconds have passed, the last failure propagates. Cancellation is
    never retried."""
    delay = first_delay
    deadline = time.monotonic() + patience
    while True:
        try:
            return await call()
        except asyncio.CancelledError:
            raise
        except Exception:
            if time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


__all__ = ["with_backoff"]

"""Store work that must outlive a brief outage (a restarting database, a locked file):
a call retried until it succeeds, or a task repeated on a timer whatever one round does."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

#: ``on_failure(exc, overdue)`` sees each failure before its wait; ``overdue`` is True once
#: the next try would end beyond the patience (the caller may then give up waiting on it).
FailureHook = Callable[[Exception, bool], None]


async def with_backoff(
    call: Callable[[], Awaitable[T]],
    *,
    patience: float,
    first_delay: float = 0.05,
    max_delay: float = 5.0,
    on_failure: FailureHook | None = None,
    forever: bool = False,
) -> T:
    """``await call()`` until it succeeds, sleeping twice as long after each failure;
    once ``patience`` seconds have passed, the last failure propagates, unless
    ``forever`` (then ``on_failure`` is told it is overdue and the tries go on: what is
    retried must never be dropped). Cancellation is never retried."""
    delay = first_delay
    deadline = time.monotonic() + patience
    while True:
        try:
            return await call()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            overdue = time.monotonic() + delay > deadline
            if on_failure is not None:
                on_failure(exc, overdue)
            if overdue and not forever:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


async def repeat_forever(interval: float, step: Callable[[], Awaitable[object]], what: str) -> None:
    """``await step()`` every ``interval`` seconds, forever: a failed round is logged (as
    ``what``) and the next one comes as usual. Cancel the task to stop it."""
    while True:
        await asyncio.sleep(interval)
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("agentbuild: %s failed: %s", what, exc)


__all__ = ["FailureHook", "repeat_forever", "with_backoff"]

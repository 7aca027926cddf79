"""Waiting for a preview process to be ready, the same way in every sandbox: probe until
it answers, fail as soon as it exits, give up at the deadline (stopping it either way)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from .base import PreviewFailed


async def wait_until_ready(
    probe: Callable[[float], Awaitable[str | None]],
    exited: asyncio.Future[Any],
    *,
    exit_code: Callable[[], int | None],
    stop: Callable[[], Awaitable[None]],
    port: int,
    timeout: float,  # noqa: ASYNC109 (a deadline for the probes, not for this call)
    interval: float,
    not_ready: Callable[[str], str],
) -> None:
    """Call ``probe(seconds left)`` until it returns None (ready); between probes wait at
    most ``interval`` for ``exited``. Raises :class:`PreviewFailed`, after ``stop()``,
    when the process exited (with ``exit_code()``) or ``timeout`` passed (with
    ``not_ready(last answer)`` as the message; an answer is what a probe returned)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    answer = ""
    while True:
        result = await probe(max(0.1, deadline - loop.time()))
        if result is None:
            return
        answer = result
        if exited.done():
            await stop()
            code = exit_code()
            raise PreviewFailed(
                f"the preview process exited with status {code} before it was ready on port {port}",
                exit_code=code,
            )
        if loop.time() >= deadline:
            await stop()
            raise PreviewFailed(not_ready(answer))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(exited), interval)


__all__ = ["wait_until_ready"]

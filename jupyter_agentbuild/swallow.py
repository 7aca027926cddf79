"""Failures that must not stop clean-up, yet must never go unseen.

``with swallowed(log, "closing X"):`` replaces ``contextlib.suppress(Exception)``: the
failure is not raised (the clean-up goes on), but it is logged, so an operator can
tell a leftover sandbox or a stuck connection from a quiet success.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def swallowed(
    logger: logging.Logger,
    what: str,
    *,
    level: int = logging.WARNING,
    describe: Callable[[BaseException], str] = str,
) -> Iterator[None]:
    """Run the body; an ``Exception`` from it is logged at ``level`` as
    ``agentbuild: <what> failed (<type>: <describe(exc)>)`` and not raised.
    ``describe`` redacts what must never reach a log (an API key)."""
    try:
        yield
    except Exception as exc:
        logger.log(level, "agentbuild: %s failed (%s: %s)", what, type(exc).__name__, describe(exc))


__all__ = ["swallowed"]

"""with_backoff: a store call retried through a brief outage, and given up after it."""

from __future__ import annotations

import asyncio

import pytest

from jupyter_agentbuild.retry import with_backoff


def test_a_call_that_recovers_returns_its_value_and_one_that_does_not_raises() -> None:
    async def main() -> None:
        calls: list[float] = []

        async def flaky() -> str:
            calls.append(asyncio.get_running_loop().time())
            if len(calls) < 3:
                raise OSError("database is restarting")
            return "stored"

        assert await with_backoff(flaky, patience=5, first_delay=0.01) == "stored"
        assert len(calls) == 3
        assert calls[2] - calls[1] >= calls[1] - calls[0], "each wait at least the last"

        attempts = 0

        async def down() -> None:
            nonlocal attempts
            attempts += 1
            raise OSError(f"down ({attempts})")

        with pytest.raises(OSError, match=r"down \(\d+\)"):
            await with_backoff(down, patience=0.1, first_delay=0.01)
        assert 2 <= attempts <= 6  # 0.01, 0.02, 0.04 ... within 0.1 s

    asyncio.run(main())


def test_cancellation_is_not_retried() -> None:
    async def main() -> None:
        attempts = 0

        async def cancelled() -> None:
            nonlocal attempts
            attempts += 1
            raise asyncio.CancelledError

        with pytest.raises(asyncio.CancelledError):
            await with_backoff(cancelled, patience=5)
        assert attempts == 1

    asyncio.run(main())

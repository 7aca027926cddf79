"""with_backoff: a store call retried through a brief outage, and given up after it."""

from __future__ import annotations

import asyncio

import pytest

from jupyter_agentbuild.retry import with_backoff


async def test_a_call_that_recovers_returns_its_value_and_one_that_does_not_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The waits are recorded, not timed: the test does not depend on the machine's load."""
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded_sleep(delay: float) -> None:
        waits.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", recorded_sleep)

    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise OSError("database is restarting")
        return "stored"

    assert await with_backoff(flaky, patience=5, first_delay=0.01) == "stored"
    assert calls == 3 and waits == [0.01, 0.02]

    waits.clear()
    attempts = 0

    async def down() -> None:
        nonlocal attempts
        attempts += 1
        raise OSError(f"down ({attempts})")

    with pytest.raises(OSError, match=r"down \(8\)"):
        await with_backoff(down, patience=1.0, first_delay=0.01, max_delay=5.0)
    # doubling from 10 ms while the next wait still ends within the second of patience
    assert waits == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64]


async def test_cancellation_is_not_retried() -> None:
    attempts = 0

    async def cancelled() -> None:
        nonlocal attempts
        attempts += 1
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await with_backoff(cancelled, patience=5)
    assert attempts == 1


async def test_forever_tells_the_caller_it_is_overdue_and_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What must never be dropped (a build's log entries) is retried past the patience;
    the hook learns when it is overdue, so the caller can stop waiting on it."""
    real_sleep = asyncio.sleep

    async def no_wait(delay: float) -> None:
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", no_wait)
    seen: list[tuple[str, bool]] = []

    attempts = 0

    async def recovers_late() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 12:
            raise OSError(f"down {attempts}")
        return "stored"

    result = await with_backoff(
        recovers_late,
        patience=0.5,
        first_delay=0.1,
        on_failure=lambda exc, overdue: seen.append((str(exc), overdue)),
        forever=True,
    )
    assert result == "stored" and attempts == 12

    assert len(seen) == 11
    assert [overdue for _, overdue in seen[:2]] == [False, False]  # 0.1, then 0.2: in time
    assert all(overdue for _, overdue in seen[3:])  # past the half second, on and on

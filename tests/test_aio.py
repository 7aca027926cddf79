"""first_of: wait for the first of a few things, leaving nothing behind."""

from __future__ import annotations

import asyncio

from jupyter_agentbuild.aio import first_of


async def test_returns_at_the_first_and_cancels_only_its_own_waiters() -> None:
    stop, other = asyncio.Event(), asyncio.Event()
    step = asyncio.create_task(asyncio.Event().wait())  # a step that runs on
    waiting = asyncio.create_task(first_of(step, stop.wait(), other.wait()))
    await asyncio.sleep(0)
    assert not waiting.done()
    stop.set()
    await waiting
    assert not step.done()  # passed in as a task: the caller's to finish
    own = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} - {step}
    await asyncio.sleep(0)  # the cancelled waiters finish their cancellation
    assert all(t.done() for t in own)
    step.cancel()


async def test_a_bound_ends_the_wait_when_nothing_happens() -> None:
    never = asyncio.Event()
    await asyncio.wait_for(first_of(never.wait(), at_most=0.01), 5)

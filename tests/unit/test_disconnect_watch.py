"""CancelOnLeave: the block under it ends with CallerLeft as soon as the caller is gone, and
leaves nothing behind when the caller stays."""

from __future__ import annotations

import asyncio

import pytest

from app.errors import CallerLeft
from app.orchestrator.disconnect import WATCH_AFTER_SEC, CancelOnLeave


def signal() -> tuple[asyncio.Event, CancelOnLeave]:
    gone = asyncio.Event()

    async def wait() -> None:
        await gone.wait()

    return gone, CancelOnLeave(wait)


async def test_the_block_ends_with_caller_left_when_the_caller_goes() -> None:
    gone, watch = signal()
    cleaned_up = False

    async def upstream_call() -> None:
        nonlocal cleaned_up
        try:
            await asyncio.sleep(60)
        finally:
            cleaned_up = True  # the cancellation reaches the call where it waits

    asyncio.get_running_loop().call_later(0.05, gone.set)
    with pytest.raises(CallerLeft):
        async with watch:
            await asyncio.wait_for(upstream_call(), 10)
    assert cleaned_up and watch.left
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the task is not left "being cancelled"
    await asyncio.sleep(0)  # and it can await again


async def test_a_caller_who_stays_changes_nothing() -> None:
    gone, watch = signal()
    tasks = len(asyncio.all_tasks())
    async with watch:
        await asyncio.sleep(0.01)
        assert len(asyncio.all_tasks()) == tasks  # a short call never pays for the watching task
    gone.set()  # leaving after the block: too late to matter
    await asyncio.sleep(WATCH_AFTER_SEC + 0.05)
    assert not watch.left


async def test_a_long_call_is_watched_by_one_task_that_is_gone_afterwards() -> None:
    _, watch = signal()
    tasks = len(asyncio.all_tasks())
    async with watch:
        await asyncio.sleep(WATCH_AFTER_SEC + 0.05)
        assert len(asyncio.all_tasks()) == tasks + 1
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == tasks
    assert not watch.left


async def test_a_cancellation_from_elsewhere_goes_on() -> None:
    gone, watch = signal()

    async def request() -> None:
        async with watch:
            await asyncio.sleep(60)

    task = asyncio.create_task(request())
    await asyncio.sleep(WATCH_AFTER_SEC + 0.05)
    gone.set()
    await asyncio.sleep(0)  # the watch runs and cancels the request ...
    assert watch.left
    task.cancel()  # ... and so does someone else before it resumes (e.g. the server's shutdown)
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_broken_signal_leaves_the_request_unwatched() -> None:
    async def broken() -> None:
        raise RuntimeError("no channel")

    async with CancelOnLeave(broken) as watch:
        await asyncio.sleep(WATCH_AFTER_SEC + 0.05)
    assert not watch.left


async def test_no_signal_watches_nothing() -> None:
    async with CancelOnLeave(None) as watch:
        await asyncio.sleep(0)
    assert not watch.left

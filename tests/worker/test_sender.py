"""The worker's sender: width at once, cancellable until started, stops cleanly.

Sends here are coroutines waiting on events the test sets (from its own thread,
through the loop), never on time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, wait
from typing import Any

import pytest

from orchestrator.processes.sender import AsyncSender


class Gate:
    """Sends that wait until released; counts how many run at once."""

    def __init__(self, sender: AsyncSender) -> None:
        self.sender = sender
        self.release = asyncio.Event()
        self.started: list[int] = []
        self.all_started = threading.Event()
        self.expect = 0

    def send(self, n: int) -> Callable[[], Coroutine[Any, Any, int]]:
        async def run() -> int:
            self.started.append(n)
            if len(self.started) == self.expect:
                self.all_started.set()
            await self.release.wait()
            return n

        return run

    def open(self) -> None:
        self.sender._loop.call_soon_threadsafe(self.release.set)


def test_no_more_than_width_sends_run_at_once_and_every_one_finishes() -> None:
    with AsyncSender(4) as sender:
        gate = Gate(sender)
        gate.expect = 4
        futures = sender.submit_all([gate.send(n) for n in range(10)])
        assert gate.all_started.wait(30)
        assert sorted(gate.started) == [0, 1, 2, 3]  # the other six wait for a slot
        assert sum(f.running() for f in futures) == 4
        gate.open()
        wait(futures, timeout=30)
    assert [f.result() for f in futures] == list(range(10))
    assert sender.most_running == 4


def test_finished_sends_are_handed_back_once_each_and_only_when_finished() -> None:
    with AsyncSender(4) as sender:
        gate = Gate(sender)
        gate.expect = 3
        futures = sender.submit_all([gate.send(n) for n in range(3)])
        assert gate.all_started.wait(30)
        assert sender.take_finished() == []  # all three still running
        gate.open()
        wait(futures, timeout=30)
        taken = sender.take_finished()
        assert sorted(f.result() for f in taken) == [0, 1, 2]
        assert set(taken) == set(futures)
        assert sender.take_finished() == []  # each handed back once


def test_a_queued_send_can_be_cancelled_a_started_one_cannot() -> None:
    with AsyncSender(2) as sender:
        gate = Gate(sender)
        gate.expect = 2
        futures = sender.submit_all([gate.send(n) for n in range(5)])
        assert gate.all_started.wait(30)
        cancelled = [f.cancel() for f in futures]
        assert cancelled == [False, False, True, True, True]
        gate.open()
        wait(futures[:2], timeout=30)
    assert [f.result() for f in futures[:2]] == [0, 1]
    assert sorted(gate.started) == [0, 1]  # the cancelled ones were never sent


def test_an_exception_in_a_send_reaches_its_future_only() -> None:
    async def boom() -> int:
        raise KeyError("surprise")

    async def fine() -> int:
        return 7

    with AsyncSender(2) as sender:
        bad, good = sender.submit_all([boom, fine])
        wait([bad, good], timeout=30)
    with pytest.raises(KeyError):
        bad.result()
    assert good.result() == 7


def test_closing_runs_the_last_step_on_the_loop_and_ends_what_still_runs() -> None:
    closed: list[bool] = []

    async def close_with() -> None:
        closed.append(asyncio.get_running_loop() is not None)

    sender = AsyncSender(1, close_with=close_with)
    with sender:
        never = asyncio.Event()
        running = threading.Event()

        async def forever() -> int:
            running.set()
            await never.wait()
            return 0

        started: Future[int] = sender.submit_all([forever])[0]
        assert running.wait(30)
    assert closed == [True]
    with pytest.raises(RuntimeError, match="sender stopped"):
        started.result(timeout=30)


def test_closing_settles_every_future_queued_or_started() -> None:
    """No future is left pending by a close: a queued send is cancelled (never sent),
    a started one fails."""
    sender = AsyncSender(1)
    with sender:
        gate = Gate(sender)
        gate.expect = 1
        futures = sender.submit_all([gate.send(n) for n in range(3)])
        assert gate.all_started.wait(30)
    assert gate.started == [0]
    with pytest.raises(RuntimeError, match="sender stopped"):
        futures[0].result(timeout=30)
    assert futures[1].cancelled() and futures[2].cancelled()


def test_width_must_be_positive() -> None:
    with pytest.raises(ValueError):
        AsyncSender(0)


def test_a_send_whose_task_is_cancelled_before_it_ran_fails_its_future() -> None:
    """Started (its task made) but closed before the task's first step: never sent, and
    its future fails rather than staying pending."""
    sent: list[int] = []

    async def send() -> int:
        sent.append(1)
        return 1

    sender = AsyncSender(1)
    with sender:
        future: Future[int] = Future()

        async def start_then_close() -> None:
            sender._start([(send, future)])  # the task is made; its first step is queued
            await sender._finish()  # ... and cancelled before it runs

        asyncio.run_coroutine_threadsafe(start_then_close(), sender._loop).result(30)
    with pytest.raises(RuntimeError, match="before the send"):
        future.result(timeout=30)
    assert sent == [] and sender.running == 0

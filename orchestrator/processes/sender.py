"""An event loop in a thread of its own that runs the worker's sends, ``width`` at once.

The worker's loop thread (it owns the database) hands sends over with ``submit``
and gets back ``concurrent.futures.Future`` objects, as a thread pool would give:
a future can be cancelled until its send starts, never after. So a stopping
worker gives back the leases of the sends that never started, and waits for the
ones on the wire, as before: no cancel is ever in flight twice for one batch.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["AsyncSender"]

_T = TypeVar("_T")

Send = Callable[[], Coroutine[Any, Any, _T]]


class AsyncSender:
    """``with AsyncSender(width) as sender:`` starts the loop; leaving it stops it
    (after ``close_with``, if given, runs on the loop: the client's connections live
    there)."""

    def __init__(
        self, width: int, *, close_with: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width!r}")
        self.width = width
        self._close_with = close_with
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sender", daemon=True)
        # Sends wait here for one of the ``width`` slots; each starts in a task of its
        # own (its own context: the metrics tell a retry by the task's last request).
        # A queue, not a semaphore per send: its wake-ups cost more than the task.
        self._queue: deque[tuple[Send[Any], Future[Any]]] = deque()
        self._closing = False
        # Started sends' tasks by their futures: a send takes itself out when it ends (no
        # done callback per task: its scheduling cost more than the lookup).
        self._tasks: dict[Future[Any], asyncio.Task[None]] = {}
        self.running = 0  # sends started and not finished (read by the tests)
        self.most_running = 0
        self._finished = 0  # sends finished since the last wait_finished returned
        self._ended: list[Future[Any]] = []  # finished sends' futures, until taken
        self._wanted = 1
        self._finishing = threading.Condition()

    def __enter__(self) -> AsyncSender:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def submit_all(self, sends: Sequence[Send[_T]]) -> list[Future[_T]]:
        """Queue sends; each starts when one of the ``width`` slots is free."""
        futures: list[Future[_T]] = [Future() for _ in sends]
        if sends:
            self._loop.call_soon_threadsafe(self._start, list(zip(sends, futures, strict=True)))
        return futures

    def wait_finished(self, count: int, timeout: float) -> None:
        """Wait until ``count`` sends have finished since the last call returned, or for
        ``timeout`` seconds: the worker records answers a batch at a time."""
        with self._finishing:
            self._wanted = count
            self._finishing.wait_for(lambda: self._finished >= count, timeout)
            self._finished = 0

    def take_finished(self) -> list[Future[Any]]:
        """The futures of the sends that finished since the last call, in the order
        they finished: the worker collects these rather than asking every future."""
        with self._finishing:
            ended, self._ended = self._ended, []
        return ended

    def _one_finished(self, future: Future[Any]) -> None:
        with self._finishing:
            self._ended.append(future)
            self._finished += 1
            if self._finished >= self._wanted:
                self._finishing.notify()

    def close(self) -> None:
        """Stop the loop: what still runs is cancelled (the worker waited for its sends
        first, so normally nothing does); then ``close_with``."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._finish(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _finish(self) -> None:
        self._closing = True
        while self._queue:  # never started: cancelled (the worker gave them back already)
            self._queue.popleft()[1].cancel()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for future in list(self._tasks):  # cancelled before its task ever ran
            del self._tasks[future]
            future.set_exception(RuntimeError("the sender stopped before the send"))
            self._finished_one(future)
        if self._close_with is not None:
            await self._close_with()

    def _start(self, pairs: list[tuple[Send[Any], Future[Any]]]) -> None:
        self._queue.extend(pairs)
        self._fill()

    def _fill(self) -> None:
        """Start queued sends while a slot is free."""
        while self._queue and self.running < self.width and not self._closing:
            send, future = self._queue.popleft()
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while it waited for a slot: never sent
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self._tasks[future] = self._loop.create_task(self._run(send, future))

    async def _run(self, send: Send[Any], future: Future[Any]) -> None:
        try:
            result = await send()
        except asyncio.CancelledError:
            future.set_exception(RuntimeError("the sender stopped during the send"))
            raise
        except BaseException as exc:  # the caller's future carries it
            future.set_exception(exc)
        else:
            future.set_result(result)
        finally:
            del self._tasks[future]
            self._finished_one(future)

    def _finished_one(self, future: Future[Any]) -> None:
        self.running -= 1
        self._one_finished(future)
        self._fill()

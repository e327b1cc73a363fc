"""Work handed to a few lanes in turn, each lane a connection and a thread of its own.

A download's chunks commit on two PostgreSQL connections at once (see
``orchestrator.db.results``): one chunk drains and commits on its lane's thread
while the next chunk's rows stream on the other's. A single lane runs its work
in the caller's thread: SQLite has one writer, so there is nothing to overlap
(and its connection stays in the thread that opened it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Generic, TypeVar

__all__ = ["Lanes"]

_On = TypeVar("_On")
_R = TypeVar("_R")


class Lanes(Generic[_On]):
    """``run(n, work)`` runs ``work(on)`` with lane ``n % len(lanes)``'s ``on``, on that
    lane's thread (one piece of work at a time per lane, in the order given); with
    one lane, at once in the caller's thread. Leaving the ``with`` waits for them."""

    def __init__(self, ons: Sequence[_On]) -> None:
        self._ons = list(ons)
        many = len(self._ons) > 1
        self._threads = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lane-{i}") if many else None
            for i in range(len(self._ons))
        ]

    def __len__(self) -> int:
        return len(self._ons)

    def run(self, n: int, work: Callable[[_On], _R]) -> Future[_R]:
        lane = n % len(self._ons)
        on, thread = self._ons[lane], self._threads[lane]
        if thread is not None:
            return thread.submit(work, on)
        done: Future[_R] = Future()
        try:
            done.set_result(work(on))
        except BaseException as exc:  # the caller reads it from the future, as from a thread
            done.set_exception(exc)
        return done

    def __enter__(self) -> Lanes[_On]:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for thread in self._threads:
            if thread is not None:
                thread.shutdown(wait=True)

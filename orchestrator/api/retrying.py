"""The client's in-process retries: a few quick attempts, never a long sleep.

Follows ``RetryPolicy``; when it stops on a retryable failure it raises
``RetryLater`` so the durable layer can persist the next attempt time. An
``abort()`` ends the wait between attempts and stops the retrying.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from orchestrator.api.errors import ApiCall, RetryLater
from orchestrator.api.failures import Failure
from orchestrator.api.limits import Interrupter
from orchestrator.core.retry_policy import RetryPolicy, Verdict, VerdictKind

__all__ = ["Outcome", "Retrier"]

logger = logging.getLogger("orchestrator.api.client")  # one logger for the client's story

_T = TypeVar("_T")


@dataclass
class Outcome(Generic[_T]):
    """What one attempt produced; retried on ``verdict``."""

    verdict: Verdict
    attempt: int
    payload: _T | None = None
    error: Failure | None = None
    planned_wait: float | None = field(default=None, repr=False)


class Retrier:
    """The retry loop, sync (``run``) and async (``run_async``): both ask ``_next_wait``
    after each attempt, so they stop and wait alike. (A plain loop: tenacity's machinery
    cost more CPU per call than the rest of a cancel's client side.)"""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        sleep: Callable[[float], None],
        random: Callable[[], float],
        interrupter: Interrupter,
    ) -> None:
        self._policy = policy
        self._sleep = sleep
        self._random = random
        self._interrupter = interrupter

    def _planned_wait(self, outcome: Outcome[Any]) -> float:
        if outcome.planned_wait is None:
            outcome.planned_wait = self._policy.next_wait(
                outcome.verdict, outcome.attempt - 1, self._random()
            )
        return outcome.planned_wait

    def _next_wait(
        self, call: ApiCall, extra: dict[str, str | None], outcome: Outcome[Any]
    ) -> float | None:
        """Seconds to wait before the next attempt; None: stop with this outcome.

        Stops on an answer not to retry, after ``max_in_process_attempts``, before a
        wait longer than ``max_in_process_wait`` (it is persisted instead), and once
        aborted; checked in that order (the planned wait draws a random number only
        when the attempts are not used up)."""
        policy = self._policy
        if outcome.verdict.kind is not VerdictKind.RETRY:
            return None
        if outcome.attempt >= policy.max_in_process_attempts:
            return None
        wait = self._planned_wait(outcome)
        if wait > policy.max_in_process_wait or self._interrupter.aborted:
            return None
        logger.info(
            "%s: %s; retry %d/%d in %.3gs",
            call,
            outcome.verdict.reason,
            outcome.attempt,
            policy.max_in_process_attempts - 1,
            wait,
            extra={**extra, "request_id": getattr(outcome.error, "request_id", None)},
        )
        return wait

    def run(
        self,
        call: ApiCall,
        extra: dict[str, str | None],
        attempt: Callable[[int], Outcome[_T]],
    ) -> tuple[_T, int]:
        number = 1
        while True:
            outcome = attempt(number)
            wait = self._next_wait(call, extra, outcome)
            if wait is None:
                return self._result(outcome, extra)
            self._sleep(wait)
            number += 1

    async def run_async(
        self,
        call: ApiCall,
        extra: dict[str, str | None],
        attempt: Callable[[int], Awaitable[Outcome[_T]]],
        sleep: Callable[[float], Awaitable[None]],
    ) -> tuple[_T, int]:
        number = 1
        while True:
            outcome = await attempt(number)
            wait = self._next_wait(call, extra, outcome)
            if wait is None:
                return self._result(outcome, extra)
            await sleep(wait)
            number += 1

    def _result(self, outcome: Outcome[_T], extra: dict[str, str | None]) -> tuple[_T, int]:
        if outcome.verdict.kind is VerdictKind.OK and outcome.payload is not None:
            return outcome.payload, outcome.attempt
        assert outcome.error is not None
        if outcome.verdict.kind is VerdictKind.RETRY:
            raise self._retry_later(outcome, outcome.error, extra)
        # What is raised is not logged above DEBUG here: the caller records it and says it
        # once, in its own line (a 404 logged by the client and again by the poll was two
        # lines for one answer).
        error = outcome.error
        logger.debug("%s", error, extra={**extra, "request_id": _rid_of(error)})
        raise error

    def _retry_later(
        self, outcome: Outcome[Any], error: Failure, extra: dict[str, str | None]
    ) -> RetryLater:
        policy = self._policy
        retry_after = outcome.verdict.retry_after
        capped = policy.cap_retry_after(retry_after) if retry_after is not None else None
        planned = outcome.planned_wait
        if planned is not None and planned > policy.max_in_process_wait:
            delay: float | None = planned
        else:
            delay = capped
        later = RetryLater(delay, error, attempts=outcome.attempt, retry_after=capped)
        logger.debug("%s", later, extra={**extra, "request_id": _rid_of(error)})  # see run()
        return later


def _rid_of(error: Failure) -> str | None:
    return getattr(error, "request_id", None)

"""The client's in-process retries: a few quick attempts, never a long sleep.

Follows ``RetryPolicy``; when it stops on a retryable failure it raises
``RetryLater`` so the durable layer can persist the next attempt time. An
``abort()`` ends the wait between attempts and stops the retrying.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import tenacity

from orchestrator.api.errors import ApiCall, ApiHeldBack, RetryLater
from orchestrator.api.failures import Failure
from orchestrator.api.limits import Interrupter
from orchestrator.core.retry_policy import RetryPolicy, Verdict, VerdictKind

__all__ = ["Outcome", "Retrier"]

logger = logging.getLogger("orchestrator.api.client")  # one logger for the client's story

_T = TypeVar("_T")


@dataclass
class Outcome(Generic[_T]):
    """What one attempt produced; tenacity retries on ``verdict``."""

    verdict: Verdict
    attempt: int
    payload: _T | None = None
    error: Failure | None = None
    planned_wait: float | None = field(default=None, repr=False)


def _is_retry(outcome: Outcome[Any]) -> bool:
    return outcome.verdict.kind is VerdictKind.RETRY


def _outcome_of(state: tenacity.RetryCallState) -> Outcome[Any]:
    assert state.outcome is not None
    return cast("Outcome[Any]", state.outcome.result())


class _StopWhen(tenacity.stop.stop_base):
    """Stop once ``stop()`` says so (aborted; the caller may no longer retry)."""

    def __init__(self, stop: Callable[[], bool]) -> None:
        self._stop = stop

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._stop()


class _StopWhenWaitTooLong(tenacity.stop.stop_base):
    """Stop instead of sleeping through a wait longer than the in-process limit (the
    durable layer persists it instead)."""

    def __init__(self, planned_wait: Callable[[tenacity.RetryCallState], float], limit: float):
        self._planned_wait = planned_wait
        self._limit = limit

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._planned_wait(retry_state) > self._limit


class Retrier:
    """The retry loop on tenacity, sync (``run``) and async (``run_async``): both are
    built by ``_options``, so they stop, wait and log alike. The loop is built only
    once the first attempt asks for a retry: building and entering it cost ~120 us a
    call, more than a cancel's whole HTTP exchange (docs/benchmarks.md). Stops on an answer not to
    retry, after ``max_in_process_attempts``, before a wait longer than
    ``max_in_process_wait``, and once aborted."""

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

    def _planned_wait(self, state: tenacity.RetryCallState) -> float:
        outcome = _outcome_of(state)
        if outcome.planned_wait is None:
            outcome.planned_wait = self._policy.next_wait(
                outcome.verdict, state.attempt_number - 1, self._random()
            )
        return outcome.planned_wait

    def _options(
        self,
        call: ApiCall,
        extra: dict[str, str | None],
        may_retry: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        policy = self._policy

        def before_sleep(state: tenacity.RetryCallState) -> None:
            outcome = _outcome_of(state)
            logger.info(
                "%s: %s; retry %d/%d in %.3gs",
                call,
                outcome.verdict.reason,
                state.attempt_number,
                policy.max_in_process_attempts - 1,
                self._planned_wait(state),
                extra={**extra, "request_id": getattr(outcome.error, "request_id", None)},
            )

        interrupter = self._interrupter
        stop = (
            tenacity.stop_after_attempt(policy.max_in_process_attempts)
            | _StopWhenWaitTooLong(self._planned_wait, policy.max_in_process_wait)
            | _StopWhen(lambda: interrupter.aborted)
        )
        if may_retry is not None:
            stop |= _StopWhen(lambda: not may_retry())
        return {
            "retry": tenacity.retry_if_result(_is_retry),
            "wait": self._planned_wait,
            "stop": stop,
            "before_sleep": before_sleep,
            "retry_error_callback": _outcome_of,
        }

    def run(
        self,
        call: ApiCall,
        extra: dict[str, str | None],
        attempt: Callable[[int], Outcome[_T]],
    ) -> tuple[_T, int]:
        first = attempt(1)
        if not _is_retry(first):  # tenacity would hand it back as it is: not built
            return self._result(first, extra, went_out=_went_out(first))
        retrying = tenacity.Retrying(sleep=self._sleep, **self._options(call, extra))
        later = _Attempts(first)
        outcome: Outcome[_T] = retrying(lambda: later.made() or later.seen(attempt(later.number())))
        return self._result(outcome, extra, went_out=later.went_out)

    async def run_async(
        self,
        call: ApiCall,
        extra: dict[str, str | None],
        attempt: Callable[[int], Awaitable[Outcome[_T]]],
        sleep: Callable[[float], Awaitable[None]],
        *,
        may_retry: Callable[[], bool] | None = None,
    ) -> tuple[_T, int]:
        """``run``, awaited. ``may_retry``: asked before each retry (before its wait and
        after it); False ends the call with the last outcome, as the retries running
        out would (the worker: its leases may be others' by now)."""
        first = await attempt(1)
        if not _is_retry(first):  # as in run(): most calls need no retry loop at all
            return self._result(first, extra, went_out=_went_out(first))
        retrying = tenacity.AsyncRetrying(sleep=sleep, **self._options(call, extra, may_retry))
        later = _Attempts(first)

        async def next_attempt() -> Outcome[_T]:  # a coroutine function: tenacity awaits it
            made = later.made()
            if made is not None:
                return made
            if may_retry is not None and not may_retry():  # changed during the wait: the
                return later.last  # last outcome again, which the stop now ends on
            return later.seen(await attempt(later.number()))

        outcome: Outcome[_T] = await retrying(next_attempt)
        return self._result(outcome, extra, went_out=later.went_out)

    def _result(
        self, outcome: Outcome[_T], extra: dict[str, str | None], *, went_out: bool
    ) -> tuple[_T, int]:
        if outcome.verdict.kind is VerdictKind.OK and outcome.payload is not None:
            return outcome.payload, outcome.attempt
        assert outcome.error is not None
        if outcome.verdict.kind is VerdictKind.RETRY:
            raise self._retry_later(outcome, outcome.error, extra, went_out=went_out)
        # What is raised is not logged above DEBUG here: the caller records it and says it
        # once, in its own line (a 404 logged by the client and again by the poll was two
        # lines for one answer).
        error = outcome.error
        logger.debug("%s", error, extra={**extra, "request_id": _rid_of(error)})
        raise error

    def _retry_later(
        self,
        outcome: Outcome[Any],
        error: Failure,
        extra: dict[str, str | None],
        *,
        went_out: bool,
    ) -> RetryLater:
        policy = self._policy
        retry_after = outcome.verdict.retry_after
        capped = policy.cap_retry_after(retry_after) if retry_after is not None else None
        planned = outcome.planned_wait
        if planned is not None and planned > policy.max_in_process_wait:
            delay: float | None = planned
        else:
            delay = capped
        later = RetryLater(
            delay, error, attempts=outcome.attempt, retry_after=capped, went_out=went_out
        )
        logger.debug("%s", later, extra={**extra, "request_id": _rid_of(error)})  # see run()
        return later


class _Attempts(Generic[_T]):
    """What tenacity's loop calls once the first attempt asked for a retry: that first
    outcome (already made: tenacity judges it, waits and logs as for any other), then
    new attempts numbered from 2."""

    def __init__(self, first: Outcome[_T]) -> None:
        self._first: Outcome[_T] | None = first
        self.last = first
        self._numbers = iter(range(2, 1 << 30))
        # Did any attempt reach the wire? A retry the shared budget held back after a
        # 503 went out is still a call that may have worked on the server.
        self.went_out = _went_out(first)

    def seen(self, outcome: Outcome[_T]) -> Outcome[_T]:
        self.went_out = self.went_out or _went_out(outcome)
        self.last = outcome
        return outcome

    def made(self) -> Outcome[_T] | None:
        first, self._first = self._first, None
        return first

    def number(self) -> int:
        return next(self._numbers)


def _went_out(outcome: Outcome[Any]) -> bool:
    """Was this attempt sent (not held back by the shared request budget)?"""
    return not isinstance(outcome.error, ApiHeldBack)


def _rid_of(error: Failure) -> str | None:
    return getattr(error, "request_id", None)

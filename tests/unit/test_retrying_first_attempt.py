"""The retry loop is built only once an attempt asks for a retry (api/retrying.py):
a first attempt that needs none is handed back without tenacity; one that does is
judged, waited on and logged by tenacity as before, attempts numbered from 1."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import tenacity

from orchestrator.api.errors import ApiCall, ApiTransportError, RetryLater
from orchestrator.api.limits import Interrupter
from orchestrator.api.retrying import Outcome, Retrier
from orchestrator.core.retry_policy import RetryPolicy, TransportFailure, Verdict, VerdictKind

CALL = ApiCall("cancel", "POST", "/batches/batch_abc/cancel")
POLICY = RetryPolicy(initial_delay=0.5, jitter=0.0, max_in_process_attempts=3)


def ok(number: int) -> Outcome[str]:
    return Outcome(Verdict(VerdictKind.OK, "HTTP 200"), number, payload=f"answer {number}")


def dropped(number: int) -> Outcome[str]:
    error = ApiTransportError(CALL, kind=TransportFailure.READ, detail="reset")
    return Outcome(Verdict(VerdictKind.RETRY, "connection dropped"), number, error=error)


def retrier(sleeps: list[float]) -> Retrier:
    return Retrier(POLICY, sleep=sleeps.append, random=lambda: 0.0, interrupter=Interrupter())


def run_both(script: list[Any], sleeps: list[float]) -> tuple[list[int], list[int], Any, Any]:
    """Run the script through ``run`` and ``run_async``: the numbers each asked for and
    what each returned (or raised)."""
    sync_numbers: list[int] = []
    async_numbers: list[int] = []

    def attempt(number: int) -> Outcome[str]:
        sync_numbers.append(number)
        return script[number - 1](number)  # type: ignore[no-any-return]

    async def attempt_async(number: int) -> Outcome[str]:
        async_numbers.append(number)
        return script[number - 1](number)  # type: ignore[no-any-return]

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    def outcome_of(call: Any) -> Any:
        try:
            return call()
        except RetryLater as exc:
            return exc

    sync = outcome_of(lambda: retrier(sleeps).run(CALL, {}, attempt))
    asynchronous = outcome_of(
        lambda: asyncio.run(retrier(sleeps).run_async(CALL, {}, attempt_async, sleep))
    )
    return sync_numbers, async_numbers, sync, asynchronous


def test_an_answer_needing_no_retry_never_builds_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tenacity built for an answer that needs no retry")

    monkeypatch.setattr(tenacity, "Retrying", refuse)
    monkeypatch.setattr(tenacity, "AsyncRetrying", refuse)
    sleeps: list[float] = []
    numbers, async_numbers, sync, asynchronous = run_both([ok], sleeps)
    assert numbers == async_numbers == [1]
    assert sync == asynchronous == ("answer 1", 1)
    assert sleeps == []


def test_a_retry_is_tenacitys_from_the_first_answer_on(caplog: pytest.LogCaptureFixture) -> None:
    sleeps: list[float] = []
    with caplog.at_level(logging.INFO, logger="orchestrator.api.client"):
        numbers, async_numbers, sync, asynchronous = run_both([dropped, dropped, ok], sleeps)
    assert numbers == async_numbers == [1, 2, 3]
    assert sync == asynchronous == ("answer 3", 3)
    assert sleeps == [0.5, 1.0] * 2  # backoff from the first answer, each run
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert [m.split("; ")[1] for m in retries] == ["retry 1/2 in 0.5s", "retry 2/2 in 1s"] * 2


def test_retries_used_up_become_retry_later_with_every_attempt_counted() -> None:
    sleeps: list[float] = []
    numbers, async_numbers, sync, asynchronous = run_both([dropped] * 3, sleeps)
    assert numbers == async_numbers == [1, 2, 3]
    for raised in (sync, asynchronous):
        assert isinstance(raised, RetryLater) and raised.attempts == 3

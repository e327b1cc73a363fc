"""The client takes a token before every request it sends and reports every 429;
one process's share of the shared budget (processes/request_budget.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from orchestrator.api import ApiSettings, BatchApiClient, RetryLater
from orchestrator.api.errors import ApiHeldBack
from orchestrator.core.request_budget import MAX_HOLD_SECONDS, Bucket, BudgetRule, Grant
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.errors import DatabaseUnavailable
from orchestrator.processes.request_budget import MIN_WAIT, SharedBudget
from orchestrator.secret import Secret

BATCH = {"id": "batch_abc", "object": "batch", "status": "in_progress"}
POLICY = RetryPolicy(initial_delay=0.01, max_in_process_attempts=3, max_in_process_wait=5.0)


class FakeBudget:
    def __init__(self, *waits: float) -> None:
        self.waits = list(waits)
        self.taken = 0
        self.limited: list[float | None] = []

    def take(self) -> float:
        self.taken += 1
        return self.waits.pop(0) if self.waits else 0.0

    def take_nowait(self) -> float | None:
        return None  # always ask ``take`` (the async client does so in a thread)

    def rate_limited(self, retry_after: float | None) -> None:
        self.limited.append(retry_after)


def client(budget: FakeBudget, *answers: httpx.Response) -> tuple[BatchApiClient, list[float]]:
    steps = list(answers)
    slept: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return steps.pop(0) if len(steps) > 1 else steps[0]

    api = BatchApiClient(
        ApiSettings(api_key=Secret("sk-test-budget"), base_url="https://api.test/v1"),
        policy=POLICY,
        transport=httpx.MockTransport(handler),
        sleep=slept.append,
        budget=budget,
    )
    return api, slept


def test_every_attempt_takes_a_token_and_a_429_is_reported_with_its_retry_after() -> None:
    budget = FakeBudget()
    api, slept = client(
        budget,
        httpx.Response(429, json={"error": {}}, headers={"retry-after-ms": "1500"}),
        httpx.Response(200, json=BATCH),
    )
    assert api.retrieve("batch_abc").data == BATCH
    assert budget.taken == 2  # the retry too
    assert budget.limited == [1.5]
    assert slept == [1.5]


def test_a_short_wait_is_slept_here_a_long_one_is_retry_later_and_nothing_is_sent() -> None:
    budget = FakeBudget(0.2, 0.3)
    api, slept = client(budget, httpx.Response(200, json=BATCH))
    api.retrieve("batch_abc")
    assert slept == [0.2, 0.3] and budget.taken == 3

    held = FakeBudget(30.0)
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=BATCH)

    api = BatchApiClient(
        ApiSettings(api_key=Secret("sk-test-budget"), base_url="https://api.test/v1"),
        policy=POLICY,
        transport=httpx.MockTransport(answer),
        sleep=lambda _: None,
        budget=held,
    )
    with pytest.raises(RetryLater) as later:
        api.cancel("batch_abc")
    assert later.value.delay_s == 30.0 and isinstance(later.value.cause, ApiHeldBack)
    assert "not sent" in str(later.value) and sent == []


class FakeStore:
    def __init__(self, *grants: Grant | Exception) -> None:
        self.grants = list(grants)
        self.wants: list[int] = []
        self.holds: list[float] = []

    def take(self, rule: BudgetRule, want: int) -> Grant:
        self.wants.append(want)
        grant = self.grants.pop(0)
        if isinstance(grant, Exception):
            raise grant
        return grant

    def hold(self, rule: BudgetRule, seconds: float) -> datetime:
        self.holds.append(seconds)
        return datetime(2026, 1, 1, tzinfo=UTC)


BUCKET = Bucket(0.0, datetime(2026, 1, 1, tzinfo=UTC))


def test_a_process_fetches_a_batch_at_a_time_and_drops_tokens_it_kept_too_long() -> None:
    now = [0.0]
    store = FakeStore(Grant(BUCKET, 10, 0.0), Grant(BUCKET, 0, 0.25), Grant(BUCKET, 1, 0.0))
    budget = SharedBudget(store, BudgetRule(200), monotonic=lambda: now[0])  # type: ignore[arg-type]
    assert [budget.take() for _ in range(10)] == [0.0] * 10
    assert store.wants == [10]  # one statement for ten requests
    assert budget.take() == 0.25  # the bucket is empty: wait, and say so to every thread
    assert budget.take() == 0.25 and len(store.wants) == 2
    now[0] = 0.25
    assert budget.take() == 0.0 and len(store.wants) == 3


def test_a_429_drops_the_tokens_held_and_is_written_for_everyone() -> None:
    now = [0.0]
    store = FakeStore(Grant(BUCKET, 5, 0.0))
    budget = SharedBudget(store, BudgetRule(100), monotonic=lambda: now[0])  # type: ignore[arg-type]
    assert budget.take() == 0.0
    budget.rate_limited(2.0)
    assert store.holds == [2.0]
    assert budget.take() == pytest.approx(2.0)  # its four other tokens are gone
    budget.rate_limited(None)
    assert store.holds == [2.0, 1.0]  # no Retry-After: a second


def test_an_unreadable_budget_means_waiting_not_sending_unbudgeted() -> None:
    store = FakeStore(DatabaseUnavailable("database unavailable: gone"))
    budget = SharedBudget(store, BudgetRule(100), monotonic=lambda: 0.0)  # type: ignore[arg-type]
    assert budget.take() == 1.0


def test_the_async_client_takes_a_token_per_attempt_and_tells_a_429() -> None:
    import asyncio

    from orchestrator.api.async_client import AsyncBatchApiClient

    budget = FakeBudget(0.5)  # the first take says wait half a second
    steps = [
        httpx.Response(429, json={"error": {"message": "slow down"}}, headers={"Retry-After": "1"}),
        httpx.Response(200, json={"id": "batch_abc", "object": "batch", "status": "cancelling"}),
    ]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    api = AsyncBatchApiClient(
        ApiSettings(api_key=Secret("sk-test-budget"), base_url="https://api.test/v1"),
        policy=POLICY,
        transport=httpx.MockTransport(lambda _r: steps.pop(0)),
        sleep=sleep,
        random=lambda: 0.0,
        budget=budget,
    )
    result = asyncio.run(api.cancel("batch_abc"))
    assert result.status == 200 and result.attempts == 2
    assert budget.taken == 3  # a wait, then one token for each of the two attempts
    assert budget.limited == [1.0]
    assert slept[0] == 0.5


def test_the_async_client_writes_a_429_s_hold_off_its_event_loop() -> None:
    """The hold is a database transaction (a round trip, or a connect timeout in an
    outage): the loop, with every other send on it, goes on meanwhile."""
    import asyncio
    import threading

    from orchestrator.api.async_client import AsyncBatchApiClient

    class SlowToHold(FakeBudget):
        def __init__(self) -> None:
            super().__init__()
            self.entered, self.release = threading.Event(), threading.Event()
            self.released_in_time = False

        def rate_limited(self, retry_after: float | None) -> None:
            self.entered.set()
            self.released_in_time = self.release.wait(5)  # on the loop, nothing sets it
            super().rate_limited(retry_after)

    budget = SlowToHold()
    answers = [httpx.Response(429, headers={"Retry-After": "30"}, json={})]
    api = AsyncBatchApiClient(
        ApiSettings(api_key=Secret("sk-test-budget"), base_url="https://api.test/v1"),
        policy=POLICY,
        transport=httpx.MockTransport(lambda _r: answers[0]),
        random=lambda: 0.0,
        budget=budget,
    )

    async def scenario() -> None:
        call = asyncio.create_task(api.cancel("batch_abc"))
        assert await asyncio.to_thread(budget.entered.wait, 5)
        budget.release.set()  # the loop is free while the hold is being written
        with pytest.raises(RetryLater):
            await call

    asyncio.run(scenario())
    assert budget.released_in_time and budget.limited == [30.0]


def test_a_429_during_a_fetch_of_tokens_is_not_undone_by_its_grant() -> None:
    """Another thread's 429 lands while this one fetches tokens from the database: the
    hold stands, whatever the fetch brings back."""
    now = [0.0]
    budget: SharedBudget

    class RacingStore(FakeStore):
        def take(self, rule: BudgetRule, want: int) -> Grant:
            budget.rate_limited(2.0)
            return super().take(rule, want)

    store = RacingStore(Grant(BUCKET, 0, 0.1), Grant(BUCKET, 5, 0.0))
    budget = SharedBudget(store, BudgetRule(100), monotonic=lambda: now[0])  # type: ignore[arg-type]
    assert budget.take() == pytest.approx(2.0)  # not the bucket's 0.1
    now[0] = 2.0
    assert budget.take() == pytest.approx(2.0)  # the tokens came with another 429: dropped
    assert store.holds == [2.0, 2.0]


def test_no_token_granted_never_reads_as_send_now() -> None:
    """0 from ``take`` means "send now": a wait too small to move the clock is still one."""
    store = FakeStore(Grant(BUCKET, 0, 3.6e-17))
    budget = SharedBudget(store, BudgetRule(40), monotonic=lambda: 2701.9)  # type: ignore[arg-type]
    assert budget.take() == MIN_WAIT
    assert budget.take_nowait() == pytest.approx(MIN_WAIT)  # the other threads wait too


def test_a_429_during_a_fetch_the_database_refuses_is_not_cut_short() -> None:
    """The database is down: the fetch fails after a 429 asked for a minute meanwhile
    (whose own write failed too); the minute stands, not the second of an outage."""
    budget: SharedBudget

    class DownStore(FakeStore):
        def take(self, rule: BudgetRule, want: int) -> Grant:
            budget.rate_limited(60.0)
            raise DatabaseUnavailable("database unavailable: gone")

        def hold(self, rule: BudgetRule, seconds: float) -> datetime:
            raise DatabaseUnavailable("database unavailable: gone")

    budget = SharedBudget(DownStore(), BudgetRule(100), monotonic=lambda: 0.0)  # type: ignore[arg-type]
    assert budget.take() == pytest.approx(60.0)


def test_a_retry_held_back_after_a_request_went_out_still_went_out() -> None:
    """A 503 went out, then the in-process retry was held back: the cancel may have
    reached the server, so the RetryLater says it went out (the worker counts it as
    an attempt, and withdrawing it is refused)."""
    budget = FakeBudget(0.0, 30.0)
    api, _ = client(budget, httpx.Response(503, json={"error": {}}))
    with pytest.raises(RetryLater) as later:
        api.cancel("batch_abc")
    assert isinstance(later.value.cause, ApiHeldBack)
    assert later.value.went_out

    held = FakeBudget(30.0)
    api, _ = client(held, httpx.Response(200, json=BATCH))
    with pytest.raises(RetryLater) as never:
        api.cancel("batch_abc")
    assert not never.value.went_out


def test_the_process_that_met_a_day_long_429_holds_back_a_minute_at_the_most_too() -> None:
    """The shared row's hold is capped; this process's own wait was not: it claimed due
    cancels and put each off by a day while the others sent again after a minute."""
    now = [0.0]
    store = FakeStore(Grant(BUCKET, 5, 0.0), Grant(BUCKET, 5, 0.0))
    budget = SharedBudget(store, BudgetRule(100), monotonic=lambda: now[0])  # type: ignore[arg-type]
    budget.rate_limited(86_400.0)
    assert store.holds == [MAX_HOLD_SECONDS]
    assert budget.take() == pytest.approx(MAX_HOLD_SECONDS)
    now[0] = MAX_HOLD_SECONDS + 1
    assert budget.take() == 0.0

"""Property tests of the cancel-request and harvest rules (core/cancel_request.py,
core/harvest.py): for any sequence of events, no state moves backwards, and a
request leaves a final state only through the documented reopen."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.apply import StoredBatch
from orchestrator.core.cancel_policy import Attempt, AttemptOutcome
from orchestrator.core.cancel_request import (
    FINAL_STATES,
    REOPENABLE_STATES,
    CancelState,
    Move,
    Refusal,
    RequestPlan,
    RequestSnapshot,
    Wish,
    after_attempt,
    close,
    open_request,
    withdraw,
)
from orchestrator.core.harvest import (
    FileFacts,
    FileState,
    HarvestPlan,
    HarvestSnapshot,
    HarvestState,
    observe,
    settle,
)
from orchestrator.core.status import BatchStatus

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
OWNER = "worker-1"
WISH = Wish("ops", "budget")

statuses = st.one_of(st.none(), st.sampled_from(BatchStatus))


def batch_of(status: BatchStatus | None, at: datetime) -> StoredBatch:
    stamps = {status.timestamp_field: at} if status is not None else {}
    return StoredBatch(status=status, timestamps=stamps)


# --- the cancel request -------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    status: BatchStatus | None


@dataclass(frozen=True)
class Answer:
    outcome: AttemptOutcome
    owned: bool  # the worker still holds the lease when it records the answer
    status: BatchStatus | None  # what the answer showed of the batch; None: no batch in it


@dataclass(frozen=True)
class Ends:
    status: BatchStatus | None  # a poll saw the batch so


@dataclass(frozen=True)
class TakeBack:
    pass


request_events = st.lists(
    st.one_of(
        st.builds(Ask, statuses),
        st.builds(Answer, st.sampled_from(AttemptOutcome), st.booleans(), statuses),
        st.builds(Ends, statuses),
        st.builds(TakeBack),
    ),
    max_size=25,
)


def step(
    request: RequestSnapshot | None, event: object, now: datetime
) -> tuple[RequestSnapshot | None, RequestPlan]:
    """Apply one event through the rules, as the stores do."""
    if isinstance(event, Ask):
        state = request.state if request is not None else None
        plan = open_request(state, batch_of(event.status, now), WISH, now)
        if not plan.moves:
            return request, plan
        base = request or RequestSnapshot("batch_1", CancelState.PENDING, now, 0, None)
        return base.after(plan.changes), plan
    if request is None:
        return None, RequestPlan()
    if isinstance(event, Answer):
        leased = request.after({"lease_owner": OWNER if event.owned else "someone-else"})
        attempt = Attempt(event.outcome, now, now, retry_at=now + timedelta(seconds=30))
        batch = batch_of(event.status, now) if event.status is not None else None
        plan = after_attempt(leased, attempt, batch, OWNER)
        return leased.after(plan.changes), plan
    if isinstance(event, Ends):
        plan = close(request, batch_of(event.status, now), now)
        return request.after(plan.changes), plan
    result = withdraw(request, now)
    if isinstance(result, Refusal):
        return request, RequestPlan()
    return request.after(result.changes), result


@settings(max_examples=300, deadline=None)
@given(request_events)
def test_a_request_never_moves_backwards_and_reopens_only_by_reopen(events: list[object]) -> None:
    request: RequestSnapshot | None = None
    for n, event in enumerate(events):
        now = T0 + timedelta(minutes=n)
        before = request.state if request is not None else None
        request, plan = step(request, event, now)
        after = request.state if request is not None else None
        if before is None or after is None:
            continue
        if after.rank < before.rank:
            # the one way back: a failed or withdrawn request asked for again
            assert plan.moves[0] is Move.REOPEN, (event, before, after, plan.moves)
            assert before in REOPENABLE_STATES and isinstance(event, Ask)
        if before is CancelState.CLOSED:
            assert after is CancelState.CLOSED, "a closed request never reopens"
        if before in FINAL_STATES and after is not before:
            assert Move.REOPEN in plan.moves
        if after is not before:
            assert plan.moves, "a state changed without a move"


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(CancelState), st.integers(0, 3), st.sampled_from([None, OWNER]))
def test_withdraw_takes_back_only_what_was_never_sent(
    state: CancelState, attempts: int, lease_owner: str | None
) -> None:
    request = RequestSnapshot("batch_1", state, T0, attempts, lease_owner)
    result = withdraw(request, T0)
    allowed = state is CancelState.PENDING and attempts == 0 and lease_owner is None
    assert isinstance(result, RequestPlan) is allowed
    if isinstance(result, RequestPlan):
        assert request.after(result.changes).state is CancelState.WITHDRAWN


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(CancelState), st.integers(0, 3), st.sampled_from([None, OWNER, "other"]))
def test_a_cancel_held_back_by_the_budget_is_no_attempt(
    state: CancelState, attempts: int, lease_owner: str | None
) -> None:
    """Nothing left the host: no attempt counted, none to record; only the next attempt
    moves (while pending), and only for the lease's owner, who gives the lease back."""
    request = RequestSnapshot("batch_1", state, T0, attempts, lease_owner)
    retry_at = T0 + timedelta(seconds=60)
    held = Attempt(AttemptOutcome.RETRY, T0, T0, retry_at=retry_at, went_out=False)
    plan = after_attempt(request, held, None, OWNER)
    assert plan.attempt is None and plan.events == ()
    assert "attempts" not in plan.changes and "last_attempt_at" not in plan.changes
    if lease_owner != OWNER:
        assert plan == RequestPlan()
        return
    assert plan.changes.get("lease_owner", "kept") is None
    expected = retry_at if state is CancelState.PENDING else None
    assert plan.changes.get("next_attempt_at") == expected
    after = request.after(plan.changes)
    assert after.state is state and after.attempts == attempts
    sent = after_attempt(
        request, Attempt(AttemptOutcome.RETRY, T0, T0, retry_at=retry_at), None, OWNER
    )
    assert sent.attempt == attempts + 1 and sent.changes.get("attempts") == attempts + 1


# --- the harvest ------------------------------------------------------------------------


@dataclass(frozen=True)
class Polled:
    decided: HarvestState  # what the poll plan said: waiting, pending or done


@dataclass(frozen=True)
class Downloaded:
    files: tuple[FileState | None, ...]


harvest_events = st.lists(
    st.one_of(
        st.builds(
            Polled,
            st.sampled_from([HarvestState.WAITING, HarvestState.PENDING, HarvestState.DONE]),
        ),
        st.builds(
            Downloaded,
            st.lists(st.one_of(st.none(), st.sampled_from(FileState)), max_size=2).map(tuple),
        ),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(harvest_events)
def test_a_harvest_never_moves_backwards(events: list[Polled | Downloaded]) -> None:
    batch = HarvestSnapshot(HarvestState.WAITING)
    for n, event in enumerate(events):
        now = T0 + timedelta(minutes=n)
        plan: HarvestPlan
        if isinstance(event, Polled):
            plan = observe(batch, event.decided, now)
        else:
            files = [FileFacts(f"file-{i}", "output", s) for i, s in enumerate(event.files)]
            plan = settle(batch, files, now, retry_in=60.0)
        assert plan.state.rank >= batch.state.rank, (batch.state, event, plan.state)
        assert plan.changes.get("harvest_state", batch.state) is plan.state
        if batch.state.is_final:
            assert plan.state is batch.state or plan.state.is_final
        batch = HarvestSnapshot(
            plan.state, poll_failures=plan.changes.get("poll_failures", batch.poll_failures)
        )

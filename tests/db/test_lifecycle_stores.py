"""Property tests of the cancel-request stores against a real SQLite database, one per
example: the dry-run plan (`cancel --dry-run`) is what `CancelStore.request` then
does, and through any sequence of requests, withdrawals, answers and polls a stored
request's state never moves backwards except through the documented reopen."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from orchestrator.cli.cancel_plan import make_plan
from orchestrator.core.cancel_policy import Attempt, AttemptOutcome
from orchestrator.core.cancel_request import REOPENABLE_STATES, CancelState
from orchestrator.core.observation import parse_batch
from orchestrator.db import migrate
from orchestrator.db.batches import BatchStore
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.engine import make_engine
from orchestrator.db.models import CancelRequest
from orchestrator.db.queries import BatchFilter, OperatorQueries
from tests.worker.fake_api import batch_body

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
IDS = [f"batch_p{n}" for n in range(6)]
STATUSES = ["validating", "in_progress", "finalizing", "cancelling", "completed", "cancelled"]
# the stored request, before: none, or one in this state
PRIOR = st.one_of(st.none(), st.sampled_from(CancelState))
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "orchestrator.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


@contextmanager
def fresh(template: Path, tmp_path: Path, n: list[int]) -> Iterator[Database]:
    """A copy of the migrated template: a database of its own for each example."""
    n[0] += 1
    path = tmp_path / f"example-{n[0]}.sqlite3"
    shutil.copy(template, path)
    db = Database.connect(f"sqlite:///{path}")
    try:
        yield db
    finally:
        db.dispose()
        path.unlink()


def observe(db: Database, batch_id: str, status: str, now: datetime) -> None:
    extra: dict[str, Any] = {}
    if status in ("completed", "cancelled"):
        extra[f"{status}_at"] = 1_767_225_800
    body = batch_body(batch_id, status, **extra)
    BatchStore(db).record_observation(parse_batch(body), now=now, source="test")


def seed(db: Database, batch_id: str, status: str | None, prior: CancelState | None) -> None:
    if status is not None:
        observe(db, batch_id, status, T0)
    else:
        BatchStore(db).track([batch_id], now=T0, source="test")
    if prior is None:
        return
    CancelStore(db).request([batch_id], now=T0, requested_by="seed")
    with db.transaction() as session:
        row = session.get(CancelRequest, batch_id)
        assert row is not None
        row.state = prior.value


def state_of(db: Database, batch_id: str) -> CancelState | None:
    with db.transaction() as session:
        state = session.scalar(
            select(CancelRequest.state).where(CancelRequest.batch_id == batch_id)
        )
    return CancelState(state) if state is not None else None


@EXAMPLES
@given(
    st.lists(
        # (status: None is never observed, a prior request, named by id?)
        st.tuples(st.sampled_from([None, *STATUSES]), PRIOR, st.booleans()),
        min_size=len(IDS),
        max_size=len(IDS),
    ),
    st.lists(st.sampled_from(STATUSES), max_size=3),
)
def test_the_dry_run_plan_is_what_the_store_then_does(
    template: Path,
    tmp_path: Path,
    batches: list[tuple[str | None, CancelState | None, bool]],
    chosen_statuses: list[str],
) -> None:
    """Named ids (tracked or not, any status, any prior request) and a filter."""
    with fresh(template, tmp_path, [0]) as db:
        named: list[str] = []
        for n, (batch_id, (status, prior, by_id)) in enumerate(zip(IDS, batches, strict=True)):
            if status is not None or prior is not None or n % 2:  # else: not tracked at all
                seed(db, batch_id, status, prior)
            if by_id:
                named.append(batch_id)
        where = BatchFilter(statuses=tuple(chosen_statuses)) if chosen_statuses else None
        later = T0 + timedelta(hours=1)

        plan = make_plan(OperatorQueries(db), named, where, later)
        summary = CancelStore(db).request(
            [p.batch_id for p in plan.to_cancel + plan.skipped if p.chosen_by == "id"]
            + [p.batch_id for p in plan.to_cancel if p.chosen_by == "filter"],
            now=later,
            requested_by="ops",
        )

        assert sorted(p.batch_id for p in plan.to_cancel) == sorted(summary.new + summary.reopened)
        assert sorted(p.batch_id for p in plan.skipped if p.chosen_by == "id") == sorted(
            summary.already
        )
        planned_closes = {p.batch_id for p in plan.to_cancel if "closes at once" in p.note}
        assert planned_closes == set(summary.closed_at_once)
        # a reopen on an ended batch is planned as its closing at once
        reopens = {p.batch_id for p in plan.to_cancel if p.note.startswith("reopens")}
        assert reopens <= set(summary.reopened) <= reopens | planned_closes


# --- any sequence, through the stores -------------------------------------------------------

ask = st.tuples(st.just("ask"), st.sets(st.sampled_from(IDS[:3]), min_size=1))
take_back = st.tuples(st.just("withdraw"), st.sets(st.sampled_from(IDS[:3]), min_size=1))
answer = st.tuples(
    st.just("answer"),
    st.tuples(st.sampled_from(AttemptOutcome), st.sampled_from([None, *STATUSES])),
)
poll = st.tuples(st.just("poll"), st.tuples(st.sampled_from(IDS[:3]), st.sampled_from(STATUSES)))
operations = st.lists(st.one_of(ask, take_back, answer, poll), min_size=1, max_size=12)


def run_one(db: Database, operation: tuple[str, Any], now: datetime) -> set[str]:
    """Do it through the stores; returns the ids asked for (the only ones that may reopen)."""
    kind, arg = operation
    cancels = CancelStore(db)
    if kind == "ask":
        cancels.request(sorted(arg), now=now, requested_by="ops")
        return set(arg)
    if kind == "withdraw":
        cancels.withdraw(sorted(arg), now=now)
    elif kind == "answer":
        outcome, status = arg
        for claim in cancels.claim_due("w1", now=now, limit=1, lease_seconds=60):
            observed = None
            if status is not None:
                extra = (
                    {f"{status}_at": 1_767_225_800} if status in ("completed", "cancelled") else {}
                )
                observed = parse_batch(batch_body(claim.batch_id, status, **extra))
            attempt = Attempt(outcome, now, now, observed=observed, retry_at=now)
            cancels.record_attempt(claim, "w1", attempt)
    else:
        batch_id, status = arg
        observe(db, batch_id, status, now)
    return set()


@EXAMPLES
@given(operations)
def test_a_stored_request_never_moves_backwards_but_by_reopen(
    template: Path, tmp_path: Path, ops: list[tuple[str, Any]]
) -> None:
    with fresh(template, tmp_path, [0]) as db:
        BatchStore(db).track(IDS[:3], now=T0, source="test")
        states = {batch_id: state_of(db, batch_id) for batch_id in IDS[:3]}
        for n, operation in enumerate(ops):
            asked = run_one(db, operation, T0 + timedelta(minutes=n + 1))
            for batch_id, before in states.items():
                after = state_of(db, batch_id)
                if before is not None and after is not None and after.rank < before.rank:
                    assert batch_id in asked and before in REOPENABLE_STATES, (operation, before)
                    assert after is CancelState.PENDING or after is CancelState.ACCEPTED
                if before is CancelState.CLOSED:
                    assert after is CancelState.CLOSED
                assert before is None or after is not None, "a request vanished"
                states[batch_id] = after

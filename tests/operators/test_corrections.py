"""Issue #14: correcting mistakes. An id that is no batch id is refused, a beginning of
a tracked id names it (as `show` reads it), and `forget` drops a batch tracked by
mistake, recorded. Each test failed on the code before (commit 5d214ae)."""

from __future__ import annotations

import io
import sys
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from orchestrator.clock import utcnow
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, BatchEvent, CancelRequest, ForgottenBatch

from . import fleet as f
from .conftest import Run, as_json


def tracked(db: Database) -> set[str]:
    with db.transaction() as session:
        return set(session.scalars(select(Batch.id)))


@pytest.fixture
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


@pytest.mark.parametrize("command", ["cancel", "track"])
def test_text_that_is_no_batch_id_is_refused(fleet: Database, run: Run, command: str) -> None:
    before = tracked(fleet)
    code, _, err = run(command, "not-an-id")
    assert code == 2
    assert "not-an-id: not tracked, and not a batch id (they begin batch_)" in err
    assert tracked(fleet) == before
    code, _, _ = run(command, "not-an-id", "--any-id")  # another form, on purpose
    assert code == 0 and "not-an-id" in tracked(fleet)


@pytest.mark.parametrize("command", ["cancel", "track"])
def test_a_beginning_names_the_tracked_batch_or_is_refused(
    fleet: Database, run: Run, command: str
) -> None:
    before = tracked(fleet)
    code, _, err = run(command, "batch_toolat", "batch_slowcancel…")
    assert code == 0, err
    assert "batch_toolat is batch_toolate" in err
    assert tracked(fleet) == before  # no row for the beginning itself
    code, _, err = run(command, "batch_")
    assert code == 2 and "begins more than one tracked batch id" in err
    assert tracked(fleet) == before


def test_forget_drops_a_batch_tracked_by_mistake_and_keeps_a_record(
    fleet: Database, run: Run
) -> None:
    code, out, _ = run("forget", f.UNOBSERVED, "--dry-run")
    assert code == 0 and "plan: forget 1 batch(es); dry run" in out
    assert f.UNOBSERVED in tracked(fleet)
    code, out, _ = run("forget", "batch_trackedo", "--yes", "--reason", "typo", "--by", "ops")
    assert code == 0 and "forgot 1 batch(es)" in out
    assert f.UNOBSERVED not in tracked(fleet)
    with fleet.transaction() as session:
        (record,) = session.scalars(select(ForgottenBatch)).all()
        assert (
            session.scalars(select(BatchEvent).where(BatchEvent.batch_id == f.UNOBSERVED)).all()
            == []
        )
    assert (record.batch_id, record.forgotten_by, record.reason) == (f.UNOBSERVED, "ops", "typo")
    assert record.batch["tracked_by"] == "track"
    _, out, _ = run("status", "-o", "ids")
    assert f.UNOBSERVED not in out.split()


def test_forget_by_selector_asks_first_and_drops_cancel_and_results(
    fleet: Database, run: Run, no_terminal: None
) -> None:
    code, _, err = run("forget", "--status", "cancelled")
    assert code == 2 and "refusing to forget 1 batch(es)" in err
    assert f.CANCELLED in tracked(fleet)
    code, out, _ = run("forget", "--status", "cancelled", "--yes", "--json")
    assert code == 0 and as_json(out)["forgotten"] == [f.CANCELLED]
    with fleet.transaction() as session:
        (record,) = session.scalars(select(ForgottenBatch)).all()
        assert session.get(CancelRequest, f.CANCELLED) is None
    assert record.results_dropped == 5
    assert record.cancel_request is not None and record.cancel_request["outcome"] == "cancelled"


def test_forget_leaves_a_batch_being_worked_on_and_refuses_unknown_ids(
    fleet: Database, run: Run
) -> None:
    with fleet.transaction() as session:
        session.execute(
            update(Batch)
            .where(Batch.id == f.FAILED)
            .values(lease_owner="reconciler-1", lease_expires_at=utcnow() + timedelta(minutes=1))
        )
    code, out, err = run("forget", f.FAILED, "batch_nosuchthing", "--yes", "--json")
    assert code == 1
    assert as_json(out)["in_use"] == [f.FAILED] and as_json(out)["forgotten"] == []
    assert "batch_nosuchthing: no tracked batch has this id" in err
    assert f.FAILED in tracked(fleet)


def test_cancel_withdraw_takes_back_a_request_not_yet_sent(fleet: Database, run: Run) -> None:
    code, _, _ = run("cancel", f.VALIDATING)
    assert code == 0
    code, out, _ = run("cancel", "--withdraw", "batch_validat", f.IN_PROGRESS, "--json")
    assert code == 1  # one was kept
    answer = as_json(out)
    assert answer["withdrawn"] == [f.VALIDATING]
    assert "already sent" in answer["kept"][f.IN_PROGRESS]  # rate limited once: it went out
    with fleet.transaction() as session:
        request = session.get(CancelRequest, f.VALIDATING)
        assert request is not None and request.state == "withdrawn"
    _, out, _ = run("status", "-o", "ids", "--cancel", "withdrawn")
    assert out.split() == [f.VALIDATING]
    code, _, _ = run("cancel", f.VALIDATING)  # asked again: pending again
    _, out, _ = run("status", "-o", "ids", "--cancel", "pending")
    assert f.VALIDATING in out.split()
    run("cancel", "--withdraw", f.VALIDATING)
    ended = f.payload(f.VALIDATING, "failed", created=utcnow(), failed_at=utcnow())
    f.observe(fleet, ended, utcnow())  # the batch ends: nothing to close, nothing was sent
    with fleet.transaction() as session:
        request = session.get(CancelRequest, f.VALIDATING)
        assert request is not None and request.state == "withdrawn"

"""Issue #14: correcting mistakes. An id that is no batch id is refused, a beginning of
a tracked id names it (as `show` reads it), and `forget` drops a batch tracked by
mistake, recorded. Each test failed on the code before (commit 5d214ae)."""

from __future__ import annotations

import io
import os
import sys
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from orchestrator import Orchestrator
from orchestrator.clock import utcnow
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, BatchEvent, CancelRequest, ForgottenBatch
from orchestrator.errors import InvalidBatchId

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


@pytest.mark.parametrize(
    "command",
    [["cancel", "--withdraw"], ["cancel", "--withdraw", "--dry-run"], ["forget", "--yes"]],
)
def test_naming_only_batches_not_tracked_is_exit_4_as_show(
    fleet: Database, run: Run, command: list[str]
) -> None:
    code, _, err = run(*command, "batch_nonexist")
    assert code == 4  # `show batch_nonexist` and `results batch_nonexist` exit 4 too
    assert "batch_nonexist: no tracked batch has this id" in err
    code, _, _ = run(*command, "batch_nonexist", f.UNOBSERVED)  # one known: it was tried
    assert code == 1


@pytest.fixture
def no_user_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """A uid with no passwd entry and no USER (the Kubernetes manifests run as 10001)."""

    def getuser() -> str:
        raise KeyError("getpwuid(): uid not found: 10001")  # Python 3.11's, as it says

    monkeypatch.setattr("getpass.getuser", getuser)


def _asked_by(db: Database, batch_id: str) -> str | None:
    with db.transaction() as session:
        request = session.get(CancelRequest, batch_id)
        assert request is not None
        return request.requested_by


def test_a_user_without_a_name_is_recorded_by_uid(
    fleet: Database, db_url: str, run: Run, no_user_name: None
) -> None:
    by_uid = f"uid:{os.getuid()}"
    code, _, err = run("cancel", f.UNOBSERVED)
    assert code == 0, err
    assert _asked_by(fleet, f.UNOBSERVED) == by_uid
    code, _, err = run("cancel", "--status", "unobserved", "--yes")  # a bulk cancel's path
    assert code == 0, err
    code, _, err = run("forget", f.UNOBSERVED, "--yes")
    assert code == 0, err
    with fleet.transaction() as session:
        (record,) = session.scalars(select(ForgottenBatch)).all()
    assert record.forgotten_by == by_uid
    with Orchestrator(db_url) as orch:
        orch.cancel([f.FAILED])
    assert _asked_by(fleet, f.FAILED) == by_uid


def test_the_python_api_checks_ids_as_the_command_line_does(fleet: Database, db_url: str) -> None:
    before = tracked(fleet)
    with Orchestrator(db_url) as orch:
        with pytest.raises(InvalidBatchId, match="not-an-id, xyz"):
            orch.cancel([f.FAILED, "not-an-id", "xyz"])
        with pytest.raises(InvalidBatchId, match="xyz"):
            orch.track(["xyz"])
        assert tracked(fleet) == before  # nothing recorded, not even the good one
        assert orch.track(["xyz"], any_id=True) == ["xyz"]  # another form, on purpose
        assert orch.cancel(["xyz"]).requested == ["xyz"]  # tracked now: taken as it is


def test_the_python_api_refuses_a_user_longer_than_its_column(db_url: str) -> None:
    with pytest.raises(ValueError, match="at most 128 characters"):
        Orchestrator(db_url, user="u" * 129)

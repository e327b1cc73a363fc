"""`orchestrator cancel` with filters: the plan, the dry run, the confirmation, the record."""

from __future__ import annotations

import io
import sys

import pytest
from sqlalchemy import select

from orchestrator.db.database import Database
from orchestrator.db.models import BatchEvent, CancelRequest

from . import fleet as f
from .conftest import Fleet, Run, as_json


class Terminal(io.StringIO):
    """stdin as a person at a terminal, who will type ``answer``."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


def requests(db: Database) -> dict[str, CancelRequest]:
    with db.transaction() as session:
        return {r.batch_id: r for r in session.scalars(select(CancelRequest))}


def plan_of(out: str) -> tuple[dict[str, str], dict[str, str]]:
    data = as_json(out)
    return (
        {p["batch_id"]: p["note"] for p in data["to_cancel"]},
        {p["batch_id"]: p["note"] for p in data["skipped"]},
    )


def test_dry_run_prints_the_plan_and_requests_nothing(
    ask: Run, shared_fleet: Fleet, no_terminal: None
) -> None:
    before = requests(shared_fleet.db)
    code, out, _ = ask("cancel", "--metadata", "team=ads", "--dry-run")
    assert code == 0
    assert "to cancel (1)" in out and "skipped (1)" in out
    assert f.VALIDATING in out and "already failed" in out
    assert out.strip().splitlines()[-1] == (
        "plan: cancel 1 batch(es), skip 1; dry run: nothing was requested"
    )
    assert requests(shared_fleet.db).keys() == before.keys()


@pytest.mark.parametrize(
    ("flags", "to_cancel", "skipped"),
    [
        (["--endpoint", "/v1/embeddings"], {f.VALIDATING}, set()),
        (["--model", "text-embedding-3-small"], {f.VALIDATING}, set()),
        (["--status", "unobserved"], {f.UNOBSERVED}, set()),
        (
            ["--status", "in_progress", "--status", "cancelling"],
            set(),
            {f.IN_PROGRESS, f.SLOW_CANCEL},
        ),
        (
            ["--older-than", "1h"],
            set(),
            {f.IN_PROGRESS, f.SLOW_CANCEL, f.TOO_LATE, f.CANCELLED, f.EXPIRED},
        ),
        (
            ["--older-than", "1h", "--metadata", "team=search"],
            set(),
            {f.IN_PROGRESS, f.SLOW_CANCEL},
        ),
    ],
)
def test_filters_choose_and_the_plan_skips_ended_and_already_requested(
    ask: Run, flags: list[str], to_cancel: set[str], skipped: set[str]
) -> None:
    code, out, _ = ask("cancel", "--json", "--dry-run", *flags)
    assert code == 0
    chosen, left = plan_of(out)
    assert (set(chosen), set(left)) == (to_cancel, skipped)


def test_the_plan_says_why_each_is_skipped(ask: Run) -> None:
    _, out, _ = ask("cancel", "--json", "--dry-run", "--older-than", "1h")
    _, skipped = plan_of(out)
    assert skipped == {
        f.IN_PROGRESS: "cancel already requested (pending)",
        f.SLOW_CANCEL: "cancel already requested (accepted)",
        f.TOO_LATE: "already completed",
        f.CANCELLED: "already cancelled",
        f.EXPIRED: "already expired",
    }


def test_named_ids_join_the_selection_and_go_as_a_plain_cancel_would(ask: Run) -> None:
    code, out, _ = ask(
        "cancel", "--json", "--dry-run", "--status", "validating", "batch_brandnew", f.TOO_LATE
    )
    assert code == 0
    chosen, skipped = plan_of(out)
    assert chosen == {f.VALIDATING: "", "batch_brandnew": "not tracked yet"}
    assert skipped == {f.TOO_LATE: "cancel already requested (closed)"}


def test_without_a_terminal_it_refuses_unless_yes(
    ask: Run, shared_fleet: Fleet, no_terminal: None
) -> None:
    code, out, err = ask("cancel", "--metadata", "team=ads")
    assert code == 2
    assert "plan: cancel 1 batch(es), skip 1" in out
    assert "refusing to cancel 1 batch(es)" in err and "--yes" in err
    assert f.VALIDATING not in requests(shared_fleet.db)


def test_yes_requests_and_records_who_and_why(fleet: Database, run: Run, no_terminal: None) -> None:
    code, out, _ = run(
        "cancel", "--metadata", "team=ads", "--yes", "--by", "dana", "--reason", "ads budget"
    )
    assert code == 0
    assert "cancel requested for 1 batch(es), 1 skipped" in out
    request = requests(fleet)[f.VALIDATING]
    assert (request.state, request.requested_by) == ("pending", "dana")
    assert request.reason == "ads budget (chosen by --metadata team=ads)"
    with fleet.transaction() as session:
        details = list(
            session.scalars(
                select(BatchEvent.detail).where(
                    BatchEvent.batch_id == f.VALIDATING, BatchEvent.kind == "cancel_requested"
                )
            )
        )
    assert details == ["by dana: ads budget (chosen by --metadata team=ads)"]
    assert f.FAILED not in requests(fleet)  # skipped: already failed


def test_a_person_at_a_terminal_confirms(
    fleet: Database, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", Terminal("no\n"))
    code, out, err = run("cancel", "--status", "unobserved")
    assert code == 1
    assert "cancel these 1 batch(es)? type yes to go on" in err
    assert "not confirmed" in err and f.UNOBSERVED not in requests(fleet)
    assert "to cancel (1)" in out  # the plan, shown before the question

    monkeypatch.setattr(sys, "stdin", Terminal("yes\n"))
    code, out, _ = run("cancel", "--status", "unobserved", "--json")
    assert code == 0
    assert as_json(out)["requested"] == [f.UNOBSERVED]
    assert requests(fleet)[f.UNOBSERVED].state == "pending"


def test_nothing_to_cancel_needs_no_confirmation(ask: Run, no_terminal: None) -> None:
    code, out, _ = ask("cancel", "--older-than", "1h")
    assert code == 0
    assert "nothing to cancel" in out


def test_plain_named_cancel_is_unchanged_and_needs_no_confirmation(
    fleet: Database, run: Run, no_terminal: None
) -> None:
    code, out, _ = run("cancel", f.VALIDATING, "--json")
    assert code == 0
    assert as_json(out)["requested"] == [f.VALIDATING]


def test_a_dry_run_needs_ids_or_filters(ask: Run) -> None:
    code, out, err = ask("cancel", "--dry-run")
    assert (code, out) == (2, "")
    assert "no valid batch id given, and no selector" in err

"""`orchestrator show` leads with what a person asks first (issue #14): status, age by
the server's clock, the cancel and its outcome, answers and errors kept, what happens
next; internals only with --verbose; the history after."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import update

from orchestrator.clock import utcnow
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import CancelRequest

from . import fleet as f
from .conftest import Run


def lines_before_history(out: str) -> list[str]:
    lines = out.splitlines()
    return lines[: next(i for i, line in enumerate(lines) if line.startswith("history"))]


def test_the_first_lines_answer_status_age_cancel_results_and_next(ask: Run) -> None:
    code, out, _ = ask("show", f.IN_PROGRESS)
    assert code == 0
    head = lines_before_history(out)
    # The age is the server's: created two hours ago, though tracked 1h40m ago.
    assert head[0] == f"{f.IN_PROGRESS}: in_progress, created 2h00m ago", head
    said = "\n".join(head)
    # (ages in seconds: the fleet was recorded a moment before this test ran)
    assert re.search(
        r"cancel      pending: asked 5m0\ds ago by alice \(wrong prompt\); 1 attempt", said
    )
    assert "last: HTTP 429 rate limited" in said
    assert "results     none kept yet" in said
    assert "requests    50 done + 2 failed of 200" in said
    # The fleet's sending is paused (a 401): the cancel waits for that, the poll is due.
    assert re.search(r"next        sending paused until [-\d :]+Z; poll due now", said), said


def test_answers_and_errors_kept_and_the_cancel_outcome(ask: Run) -> None:
    _, out, _ = ask("show", f.CANCELLED)
    said = "\n".join(lines_before_history(out))
    assert said.startswith(f"{f.CANCELLED}: cancelled, created 3h20m ago"), said
    assert "cancel      closed: cancelled" in said
    assert "results     2 answers, 3 errors kept; 1 unreadable line; harvest done" in said
    assert "next        nothing: finished and harvested" in said


def test_internals_only_with_verbose_and_the_history_comes_after(ask: Run) -> None:
    _, out, _ = ask("show", f.CANCELLED)
    assert "lease_owner" not in out and "version" not in out
    assert len(out.splitlines()) < 40
    _, verbose, _ = ask("show", f.CANCELLED, "--verbose")
    assert "lease_owner" in verbose and "version" in verbose and "sha256" in verbose
    for text in (out, verbose):
        assert text.index("history") > text.index("results")


def test_an_overdue_batch_says_so_first(ask: Run) -> None:
    _, out, _ = ask("show", f.SLOW_CANCEL)
    first = out.splitlines()[0]
    assert first.startswith(f"{f.SLOW_CANCEL}: cancelling, created 1h30m ago, OVERDUE since ")


def test_the_next_cancel_attempt_is_shown_with_its_time(fleet: Database, run: Run) -> None:
    """Found: `next_attempt_at` was shown nowhere; a pending cancel says when it goes next."""
    now = utcnow()
    CancelStore(fleet).resume(now=now)  # the fleet's sending pause would come first
    with fleet.transaction() as session:
        session.execute(
            update(CancelRequest)
            .where(CancelRequest.batch_id == f.IN_PROGRESS)
            .values(next_attempt_at=now + timedelta(minutes=5))
        )
    _, out, _ = run("show", f.IN_PROGRESS)
    said = "\n".join(lines_before_history(out))
    assert re.search(r"next        cancel attempt in 4m[0-5]\ds \([-\d :]+Z\); poll ", said), said

"""`orchestrator status`: the table, its filters, the summary line, and --json."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from orchestrator.clock import utcnow
from orchestrator.core.cancel_policy import Attempt, AttemptOutcome
from orchestrator.core.observation import parse_batch
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, CancelRequest

from . import fleet as f
from .conftest import Fleet, Run, as_json


def ids(out: str) -> list[str]:
    return [b["id"] for b in as_json(out)["batches"]]


def test_the_table_shows_each_batch_with_its_cancel_age_results_and_last_error(ask: Run) -> None:
    code, out, _ = ask("status")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("batch_")}
    assert set(lines) == set(f.ALL)
    slow = lines[f.SLOW_CANCEL]
    assert "cancelling" in slow and "accepted" in slow and "OVERDUE" in slow
    assert re.search(r"\b20m\d\ds\b", slow), slow
    late = lines[f.TOO_LATE]
    assert "closed: too_late:completed" in late and " 3 " in late and "3+0/3" in late
    cancelled = lines[f.CANCELLED]
    assert re.search(r" 2 +3 \(\+1 unreadable\) +2\+0/5 ", cancelled), cancelled
    assert "HTTP 429 rate limited" in lines[f.IN_PROGRESS]  # the cancel's last error
    assert "HTTP 500 from GET" in lines[f.FAILED]
    assert "unobserved" in lines[f.UNOBSERVED]
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("8 batch(es) match: ")
    assert "1 cancelled" in summary and "1 unobserved" in summary and "1 in_progress" in summary


def test_json_has_every_row_the_counts_and_seconds_in_status(ask: Run, shared_fleet: Fleet) -> None:
    code, out, _ = ask("status", "--json")
    assert code == 0
    data = as_json(out)
    assert data["matching"] == 8 and data["shown"] == 8 and data["more"] == 0
    assert data["by_status"] == {
        "in_progress": 1,
        "cancelling": 1,
        "completed": 1,
        "cancelled": 1,
        "failed": 1,
        "validating": 1,
        "unobserved": 1,
        "expired": 1,
    }
    rows = {b["id"]: b for b in data["batches"]}
    slow = rows[f.SLOW_CANCEL]
    assert slow["overdue"] is True and slow["cancel_state"] == "accepted"
    assert 20 * 60 <= slow["seconds_in_status"] < 21 * 60
    assert rows[f.TOO_LATE]["cancel_outcome"] == "too_late:completed"
    assert rows[f.TOO_LATE]["results_stored"] == 3
    assert rows[f.TOO_LATE]["request_counts_total"] == 3
    assert ids(out)[0] == f.VALIDATING  # newest first


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--status", "cancelling"], {f.SLOW_CANCEL}),
        (["--status", "failed", "--status", "validating"], {f.FAILED, f.VALIDATING}),
        (["--status", "unobserved"], {f.UNOBSERVED}),
        (["--overdue"], {f.SLOW_CANCEL}),
        (["--cancel-requested"], {f.IN_PROGRESS, f.SLOW_CANCEL, f.TOO_LATE, f.CANCELLED}),
        (["--metadata", "team=search"], {f.IN_PROGRESS, f.SLOW_CANCEL}),
        (["--metadata", "team=search", "--metadata", "run=nightly"], {f.IN_PROGRESS}),
        (["--metadata", "team=nobody"], set()),
        (["--cancel-requested", "--status", "cancelled"], {f.CANCELLED}),
    ],
)
def test_filters_combine(ask: Run, flags: list[str], expected: set[str]) -> None:
    code, out, _ = ask("status", "--json", *flags)
    assert code == 0
    assert set(ids(out)) == expected
    assert as_json(out)["matching"] == len(expected)


def test_created_after_takes_an_age_or_an_iso_time(ask: Run, shared_fleet: Fleet) -> None:
    # created (for one never observed: tracked) in the last 10 minutes
    for flags in (["--created-after", "10m"], ["--newer-than", "10m"]):
        _, out, _ = ask("status", "--json", *flags)
        assert set(ids(out)) == {f.UNOBSERVED, f.VALIDATING}, flags
    moment = (shared_fleet.now - timedelta(minutes=10)).replace(tzinfo=None).isoformat()
    _, out, _ = ask("status", "--json", "--created-after", moment)
    assert set(ids(out)) == {f.UNOBSERVED, f.VALIDATING}


def test_since_is_refused_naming_what_replaced_it(
    ask: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status --since` counted from when we began tracking; every time flag now reads
    the server's created_at, so the old spelling is an error, not a new meaning."""
    with pytest.raises(SystemExit) as exit_info:
        ask("status", "--since", "10m")
    out, err = capsys.readouterr()
    assert (exit_info.value.code, out) == (2, "")
    assert "--since is gone" in err and "--created-after" in err and "--newer-than" in err


def test_the_limit_says_how_many_more_there_are(ask: Run) -> None:
    code, out, _ = ask("status", "--limit", "2")
    assert code == 0
    assert len([line for line in out.splitlines() if line.startswith("batch_")]) == 2
    assert "showing 2, 6 more" in out
    _, out, _ = ask("status", "--json", "--limit", "2")
    assert as_json(out)["more"] == 6


def test_nothing_matching_says_so(database: Database, run: Run) -> None:
    code, out, _ = run("status")
    assert (code, out.strip()) == (0, "no batch matches")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--created-after", "yesterday"], "neither a duration"),
        (["--metadata", "team"], "expected KEY=VALUE"),
        (["--status", "running"], "'running' is not one of validating"),
        (["--limit", "-1"], "from 0 (no limit)"),
        (["--cancel", "sent"], "not one of pending, accepted"),
        (["--older-than", "yesterday"], "not a duration"),
        (["--created-after", "0001-01-01T00:00+01:00"], "before year 1 or after year 9999"),
        (["--created-before", "9999-12-31T23:00-05:00"], "before year 1 or after year 9999"),
    ],
)
def test_bad_filters_are_usage_errors(
    ask: Run,
    flags: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        ask("status", *flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def refused_too_late(db: Database, batch_id: str) -> str:
    """A cancel the API refused with 400 because the batch had completed: the worker
    records the refusal as the attempt's error and closes the request too_late."""
    now = utcnow()
    created = now - timedelta(hours=2)
    f.observe(db, f.payload(batch_id, "in_progress", created=created), now - timedelta(hours=1))
    cancels = CancelStore(db)
    cancels.request([batch_id], now=now - timedelta(minutes=2), requested_by="dana")
    (claim,) = cancels.claim_due("worker-1", now=now, limit=10, lease_seconds=60)
    error = "HTTP 400: Cannot cancel a batch with status 'completed'."
    completed = f.payload(batch_id, "completed", created=created, completed_at=now)
    attempt = Attempt(
        AttemptOutcome.TOO_LATE,
        started_at=now,
        finished_at=now,
        http_status=400,
        request_id="req_toolate400",
        error=error,
        observed=parse_batch(completed),
    )
    cancels.record_attempts("worker-1", [(claim, attempt)])
    return error


def test_a_too_late_cancel_shows_no_last_error_but_show_keeps_the_refusal(
    database: Database, run: Run
) -> None:
    refused_too_late(database, "batch_refused")
    _, out, _ = run("status")
    (line,) = [line for line in out.splitlines() if line.startswith("batch_refused")]
    assert "closed: too_late:completed" in line
    assert line.split()[-1] == "-"  # the last error column
    assert "400" not in out and "Cannot cancel" not in out
    _, out, _ = run("status", "--json")
    (row,) = as_json(out)["batches"]
    assert (row["cancel_outcome"], row["last_error"]) == ("too_late:completed", None)
    _, out, _ = run("show", "batch_refused")
    assert "Cannot cancel a batch" in out and "req_toolate400" in out
    with database.transaction() as session:  # the batch's own trouble still shows
        session.execute(
            update(Batch).where(Batch.id == "batch_refused").values(last_error="download cut")
        )
    _, out, _ = run("status", "--json")
    assert as_json(out)["batches"][0]["last_error"] == "download cut"


def test_a_cancel_error_shows_only_while_the_cancel_is_in_trouble(
    database: Database, run: Run
) -> None:
    CancelStore(database).request(["batch_c409"], now=utcnow(), requested_by="test")
    for state, shown in (("pending", True), ("failed", True), ("accepted", False)):
        with database.transaction() as session:
            session.execute(
                update(CancelRequest)
                .where(CancelRequest.batch_id == "batch_c409")
                .values(state=state, last_error="HTTP 409: a cancel is in progress")
            )
        (row,) = as_json(run("status", "--json")[1])["batches"]
        assert (row["last_error"] is not None) is shown, state


def test_an_active_pause_heads_the_table_and_is_in_the_json(ask: Run) -> None:
    _, out, _ = ask("status")
    first = out.splitlines()[0]
    assert first.startswith("SENDING PAUSED until ")
    assert "fix the key, then `orchestrator resume`" in first and f.PAUSE_REASON in first
    paused = as_json(ask("status", "--json")[1])["paused"]
    assert paused["reason"] == f.PAUSE_REASON
    assert datetime.fromisoformat(paused["until"]) > utcnow()


def test_no_pause_line_without_a_pause_or_once_it_has_ended(database: Database, run: Run) -> None:
    _, out, _ = run("status")
    assert out.strip() == "no batch matches"
    assert as_json(run("status", "--json")[1])["paused"] is None

    now = utcnow()
    cancels = CancelStore(database)
    cancels.pause("key refused", now=now, until=now + timedelta(minutes=5))
    _, out, _ = run("status")
    assert out.splitlines()[0].startswith("SENDING PAUSED until ")
    assert out.splitlines()[-1] == "no batch matches"

    cancels.resume(now=now)  # a pause never shortens one in force: this one is new, ended
    cancels.pause("key refused", now=now - timedelta(minutes=10), until=now - timedelta(seconds=1))
    _, out, _ = run("status")
    assert "PAUSED" not in out
    assert as_json(run("status", "--json")[1])["paused"] is None

"""`status` and `show` at the widths operators' terminals have (80 and 120 columns):
ids, statuses, cancel states, request ids and checksums stay whole on one line, the
last error is one line or left out, and nothing is folded a letter a line."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from orchestrator.clock import utcnow
from orchestrator.core.cancel_policy import Attempt, AttemptOutcome
from orchestrator.db.batches import BatchStore
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database

from . import fleet as f
from .conftest import Run, as_json

# As long as the API's own: `batch_` or `req_` and 32 hex digits.
LONG_ID = "batch_6f0c1e2a9b8d4c7e5f3a2b1c0d9e8f7a"
SLOW_ID = "batch_0a1b2c3d4e5f60718293a4b5c6d7e8f9"
REQUEST_ID = "req_9c1f4e7b2a3d5c6e8f0a1b2c3d4e5f6a"
LONG_ERROR = (
    "HTTP 500 from POST /v1/batches/cancel: the server had an error while processing "
    "your request, sorry about that; you can retry your request, or contact us through "
    "our help center if the error persists"
)


@pytest.fixture(params=[80, 120])
def width(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    columns: int = request.param
    monkeypatch.setenv("COLUMNS", str(columns))
    return columns


def no_lone_characters(out: str) -> None:
    lone = [line for line in out.splitlines() if len(line.strip()) == 1]
    assert not lone, out


def one_line_a_batch(out: str) -> None:
    continued = [line for line in out.splitlines() if line.startswith(" ")]
    assert not continued, out


def row_of(out: str, batch_id: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith(batch_id)]
    return line


def test_status_keeps_ids_statuses_and_cancel_states_whole(ask: Run, width: int) -> None:
    rows = as_json(ask("status", "--json")[1])["batches"]
    _, out, _ = ask("status")
    for row in rows:
        cancel = ": ".join(filter(None, (row["cancel_state"], row["cancel_outcome"]))) or "-"
        words = [row["id"], row["status"] or "unobserved", cancel]
        pattern = r"\s+".join(re.escape(word) for word in words) + r"(\s|$)"
        assert re.match(pattern, row_of(out, row["id"])), out
    assert all(len(line) <= width for line in out.splitlines()), out
    one_line_a_batch(out)
    no_lone_characters(out)


def test_status_gives_the_last_error_one_line_or_leaves_it_out(ask: Run, width: int) -> None:
    _, out, _ = ask("status")
    header = next(line for line in out.splitlines() if line.startswith("batch "))
    expired = row_of(out, f.EXPIRED)
    if width == 120:
        assert header.rstrip().endswith("last error")
        assert re.search(r"error file file-err-\S*…$", expired.rstrip()), out
        assert row_of(out, f.IN_PROGRESS).rstrip().endswith("HTTP 429 rate limited")
    else:  # fleet ids leave 80 columns no room for it: gone, and the reader is told
        assert "last error" not in header and "HTTP 404" not in out
        assert "too narrow to show: " in out and "last error" in out
    assert "OVERDUE" in row_of(out, f.SLOW_CANCEL)  # kept before the counts


@pytest.fixture
def long_ids(database: Database) -> Database:
    """Batches with ids as long as the API's: one cancelling, with a failed cancel
    attempt (long request id and error text) and stored results (a sha256)."""
    now = utcnow()
    created = now - timedelta(hours=1)
    f.observe(database, f.payload(LONG_ID, "in_progress", created=created), now)
    f.observe(database, f.payload(SLOW_ID, "cancelling", created=created), now)
    cancels = CancelStore(database)
    cancels.request([LONG_ID], now=now, requested_by="erin", reason="wrong model")
    (claim,) = cancels.claim_due("worker-1", now=now, limit=10, lease_seconds=60)
    attempt = Attempt(
        AttemptOutcome.RETRY,
        started_at=now,
        finished_at=now,
        http_status=500,
        request_id=REQUEST_ID,
        error=LONG_ERROR,
        retry_at=now + timedelta(seconds=30),
    )
    cancels.record_attempts("worker-1", [(claim, attempt)])
    f._results(database, LONG_ID, output=2, errors=1, unreadable=0, now=now)
    BatchStore(database).track(["batch_trackedonly"], now=now, source="track")
    return database


@pytest.mark.parametrize("columns", [40, 80, 120])
def test_long_ids_are_never_cut_even_when_nothing_else_fits(
    long_ids: Database, run: Run, monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    _, out, _ = run("status")
    assert re.match(rf"{LONG_ID}\s+in_progress\s+pending(\s|$)", row_of(out, LONG_ID)), out
    assert re.match(rf"{SLOW_ID}\s+cancelling\s+-(\s|$)", row_of(out, SLOW_ID)), out
    one_line_a_batch(out)
    no_lone_characters(out)


def test_show_keeps_request_ids_and_checksums_whole(
    long_ids: Database, run: Run, width: int
) -> None:
    for verbose in ([], ["--verbose"]):  # checksums are shown with --verbose only
        _, out, _ = run("show", LONG_ID, *verbose)
        lines = out.splitlines()
        wholes = [LONG_ID, REQUEST_ID, f"file-out-{LONG_ID.removeprefix('batch_')}"]
        for whole in wholes + (["ab" * 32] if verbose else []):
            assert any(whole in line for line in lines), (whole, out)
        assert LONG_ERROR in " ".join(out.split())  # free text may wrap, at spaces
        assert all(len(line) <= width for line in lines), out
        no_lone_characters(out)

"""A small, varied fleet of batches, recorded through the real stores.

Times are relative to the real clock (``now`` passed in is ``utcnow()``) so the
SQL views, which read the database's clock, agree with the commands. Results are
inserted directly: the reconciler owns the results store.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update

from orchestrator.clock import to_unix
from orchestrator.core.cancel_policy import Attempt, AttemptOutcome
from orchestrator.core.observation import parse_batch
from orchestrator.db.batches import BatchStore
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import (
    Batch,
    BatchResult,
    FileDeletion,
    ResultFile,
    ResultLineError,
)

IN_PROGRESS = "batch_abc123"  # cancel pending after a 429; metadata team=search
SLOW_CANCEL = "batch_slowcancel"  # cancelling for 20 minutes, overdue
TOO_LATE = "batch_toolate"  # completed before the cancel landed; 3 results
CANCELLED = "batch_cancelled1"  # cancelled: 2 outputs, 3 errors, 1 unreadable line
FAILED = "batch_failed1"  # failed validation; metadata team=ads
VALIDATING = "batch_validating1"  # embeddings, another model; metadata team=ads
UNOBSERVED = "batch_trackedonly"  # tracked, never seen
EXPIRED = "batch_expired1"  # expired: 1 output stored, the error file gone (404)
ALL = (IN_PROGRESS, SLOW_CANCEL, TOO_LATE, CANCELLED, FAILED, VALIDATING, UNOBSERVED, EXPIRED)
CHAT = "/v1/chat/completions"
PAUSE_REASON = "the API refused our key (HTTP 401): check OPENAI_API_KEY"


def payload(
    batch_id: str,
    status: str,
    *,
    created: datetime,
    counts: tuple[int, int, int] = (0, 0, 0),
    endpoint: str = CHAT,
    model: str = "gpt-4o-mini",
    metadata: dict[str, str] | None = None,
    **moments: datetime | str | dict[str, Any] | None,
) -> dict[str, Any]:
    """A Batch object as the API sends it; datetimes become unix seconds."""
    body: dict[str, Any] = {
        "id": batch_id,
        "object": "batch",
        "endpoint": endpoint,
        "model": model,
        "input_file_id": f"file-in-{batch_id}",
        "completion_window": "24h",
        "status": status,
        "created_at": to_unix(created),
        "expires_at": to_unix(created + timedelta(hours=24)),
        "request_counts": dict(zip(("total", "completed", "failed"), counts, strict=True)),
        "metadata": metadata,
    }
    for name, value in moments.items():
        body[name] = to_unix(value) if isinstance(value, datetime) else value
    return body


def observe(db: Database, body: dict[str, Any], now: datetime) -> None:
    BatchStore(db).record_observation(parse_batch(body), now=now, source="worker")


def set_columns(db: Database, batch_id: str, **values: Any) -> None:
    """What the reconciler would have written (overdue flag, harvest counts, errors)."""
    with db.transaction() as session:
        session.execute(update(Batch).where(Batch.id == batch_id).values(**values))


def populate(db: Database, now: datetime) -> None:
    def minutes(n: float) -> datetime:
        return now - timedelta(minutes=n)

    cancels = CancelStore(db)

    # in progress; the cancel was asked for and rate limited once
    created = minutes(120)
    observe(
        db,
        payload(
            IN_PROGRESS,
            "in_progress",
            created=created,
            counts=(200, 50, 2),
            metadata={"team": "search", "run": "nightly"},
            in_progress_at=minutes(118),
        ),
        minutes(100),
    )
    cancels.request([IN_PROGRESS], now=minutes(5), requested_by="alice", reason="wrong prompt")
    claims = cancels.claim_due("worker-1", now=minutes(4), limit=1, lease_seconds=60)
    cancels.record_attempts(
        "worker-1",
        [
            (
                claims[0],
                Attempt(
                    AttemptOutcome.RETRY,
                    started_at=minutes(4),
                    finished_at=minutes(4),
                    http_status=429,
                    request_id="req_rate1",
                    error="HTTP 429 rate limited",
                    retry_at=minutes(3),
                ),
            )
        ],
    )

    # cancel accepted 20 minutes ago, still cancelling: overdue
    observe(
        db,
        payload(
            SLOW_CANCEL,
            "in_progress",
            created=minutes(90),
            counts=(100, 10, 0),
            metadata={"team": "search"},
            in_progress_at=minutes(88),
        ),
        minutes(60),
    )
    cancels.request([SLOW_CANCEL], now=minutes(21), requested_by="bob", reason="budget")
    claims = cancels.claim_due("worker-1", now=minutes(21), limit=1, lease_seconds=60)
    accepted = payload(
        SLOW_CANCEL,
        "cancelling",
        created=minutes(90),
        counts=(100, 12, 0),
        metadata={"team": "search"},
        in_progress_at=minutes(88),
        cancelling_at=minutes(20),
    )
    cancels.record_attempts(
        "worker-1",
        [
            (
                claims[0],
                Attempt(
                    AttemptOutcome.ACCEPTED,
                    started_at=minutes(20),
                    finished_at=minutes(20),
                    http_status=200,
                    request_id="req_ok1",
                    observed=parse_batch(accepted),
                ),
            )
        ],
    )
    set_columns(db, SLOW_CANCEL, overdue_since=minutes(10))

    # the cancel came too late: the batch completed first
    cancels.request([TOO_LATE], now=minutes(60), requested_by="carol")
    observe(
        db,
        payload(
            TOO_LATE,
            "completed",
            created=minutes(300),
            counts=(3, 3, 0),
            in_progress_at=minutes(290),
            finalizing_at=minutes(70),
            completed_at=minutes(59),
            output_file_id="file-out-toolate",
        ),
        minutes(55),
    )
    _results(db, TOO_LATE, output=3, errors=0, unreadable=0, now=minutes(50))

    # cancelled, harvested: 2 outputs, 3 errors, one line we could not read
    observe(
        db,
        payload(CANCELLED, "in_progress", created=minutes(200), counts=(5, 2, 0)),
        minutes(190),
    )
    cancels.request([CANCELLED], now=minutes(40), requested_by="alice", reason="test run")
    observe(
        db,
        payload(
            CANCELLED,
            "cancelled",
            created=minutes(200),
            counts=(5, 2, 0),
            in_progress_at=minutes(195),
            cancelling_at=minutes(39),
            cancelled_at=minutes(35),
            output_file_id="file-out-cancelled1",
            error_file_id="file-err-cancelled1",
        ),
        minutes(34),
    )
    _results(db, CANCELLED, output=2, errors=3, unreadable=1, now=minutes(30))

    # failed validation
    observe(
        db,
        payload(
            FAILED,
            "failed",
            created=minutes(30),
            metadata={"team": "ads"},
            failed_at=minutes(29),
            errors={"data": [{"code": "token_limit_exceeded", "message": "too many tokens"}]},
        ),
        minutes(28),
    )
    set_columns(db, FAILED, last_error="HTTP 500 from GET /batches (then recovered)")

    # validating, another endpoint and model
    observe(
        db,
        payload(
            VALIDATING,
            "validating",
            created=minutes(2),
            endpoint="/v1/embeddings",
            model="text-embedding-3-small",
            metadata={"team": "ads"},
        ),
        minutes(1),
    )

    # expired; its error file could not be had
    observe(
        db,
        payload(
            EXPIRED,
            "expired",
            created=minutes(25 * 60),
            counts=(4, 1, 0),
            in_progress_at=minutes(25 * 60 - 5),
            expired_at=minutes(60),
            output_file_id="file-out-expired1",
            error_file_id="file-err-expired1",
        ),
        minutes(58),
    )
    _results(db, EXPIRED, output=1, errors=0, unreadable=0, now=minutes(57))
    with db.transaction() as session:
        session.add(
            ResultFile(
                file_id="file-err-expired1",
                batch_id=EXPIRED,
                kind="error",
                state="missing",
                attempts=2,
                last_error="HTTP 404: No such File object: file-err-expired1",
                started_at=minutes(57),
                done_at=minutes(56),
            )
        )
    set_columns(
        db,
        EXPIRED,
        harvest_state="missing",
        last_error="error file file-err-expired1: HTTP 404: No such File object",
    )

    # clean-up: the cancelled batch's output file deleted, its error file refused
    with db.transaction() as session:
        for file_id, kind, state, outcome, status in (
            ("file-out-cancelled1", "output", "done", "deleted", 200),
            ("file-err-cancelled1", "error", "failed", "refused", 400),
        ):
            session.add(
                FileDeletion(
                    file_id=file_id,
                    batch_id=CANCELLED,
                    kind=kind,
                    state=state,
                    outcome=outcome,
                    attempts=1,
                    requested_at=minutes(2),
                    last_attempt_at=minutes(2),
                    last_http_status=status,
                    last_error=None if status == 200 else "HTTP 400: cannot delete",
                    done_at=minutes(2),
                )
            )

    BatchStore(db).track([UNOBSERVED], now=minutes(3), source="track")
    cancels.pause(PAUSE_REASON, now=minutes(1), until=now + timedelta(minutes=10))


def _results(
    db: Database, batch_id: str, *, output: int, errors: int, unreadable: int, now: datetime
) -> None:
    with db.transaction() as session:
        files: list[tuple[str, str, int]] = [
            ("output", f"file-out-{batch_id.removeprefix('batch_')}", output)
        ]
        if errors:
            files.append(("error", f"file-err-{batch_id.removeprefix('batch_')}", errors))
        line = 0
        for kind, file_id, count in files:
            session.add(
                ResultFile(
                    file_id=file_id,
                    batch_id=batch_id,
                    kind=kind,
                    state="done",
                    lines_committed=count + (unreadable if kind == "output" else 0),
                    results=count,
                    malformed=unreadable if kind == "output" else 0,
                    duplicates=0,
                    bytes=400 * count,
                    lines=count,
                    sha256="ab" * 32,
                    attempts=1,
                    started_at=now,
                    done_at=now,
                )
            )
            for n in range(count):
                line += 1
                ok = kind == "output"
                session.add(
                    BatchResult(
                        batch_id=batch_id,
                        custom_id=f"req-{line:03d}",
                        line_id=f"batch_req_{line}",
                        file_id=file_id,
                        file_kind=kind,
                        line_number=n + 1,
                        status_code=200 if ok else None,
                        request_id=f"req_line{line}" if ok else None,
                        body={"choices": [{"message": {"content": f"answer {line}"}}]}
                        if ok
                        else None,
                        error_code=None if ok else "batch_cancelled",
                        error_message=None if ok else "Batch was cancelled.",
                    )
                )
        if unreadable:
            session.add(
                ResultLineError(
                    file_id=files[0][1],
                    line_number=output + 1,
                    batch_id=batch_id,
                    raw='{"custom_id": truncated',
                    error="not JSON",
                )
            )
    set_columns(
        db,
        batch_id,
        results_stored=output + errors,
        result_line_errors=unreadable,
        harvest_state="done",
        harvested_at=now,
        next_poll_at=None,
    )

"""What a cancel attempt's answer means for the durable request. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from orchestrator.core.observation import BatchObservation
from orchestrator.core.status import BatchStatus


class AttemptOutcome(StrEnum):
    ACCEPTED = "accepted"  # the server is cancelling (or has cancelled) the batch
    TOO_LATE = "too_late"  # the batch had already ended some other way
    RETRY = "retry"  # try again at a persisted later time
    NOT_FOUND = "not_found"  # no such batch, or not visible to this key
    AUTH = "auth"  # 401/403: every worker stops sending for a while
    INVALID = "invalid"  # the id can never be sent


@dataclass(frozen=True)
class Attempt:
    """One cancel attempt as the worker saw it: the HTTP outcome, classified."""

    outcome: AttemptOutcome
    started_at: datetime
    finished_at: datetime
    http_status: int | None = None
    request_id: str | None = None
    error: str | None = None
    observed: BatchObservation | None = None  # the 200 body, or the GET after a refusal
    retry_at: datetime | None = None  # for RETRY and AUTH
    # (kind, detail) to record on the batch: a wrong batch in the answer, an unexpected error
    events: tuple[tuple[str, str], ...] = ()
    # False: the shared request budget held the cancel back and nothing left the host
    # (a RETRY). Not an attempt, then: neither counted nor recorded (``after_attempt``).
    went_out: bool = True


def after_rejection(observed: BatchStatus | None) -> AttemptOutcome:
    """The cancel was refused (400/409...); the batch as the server now shows it decides.

    cancelling or cancelled: our cancel (or someone's) took, the request is done.
    Any other terminal status: too late, the results still get harvested.
    Anything else (or a status we do not know): the refusal is unexplained, so
    retry later rather than give up on a cancel that was asked for.
    """
    if observed in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
        return AttemptOutcome.ACCEPTED
    if observed is not None and observed.is_terminal:
        return AttemptOutcome.TOO_LATE
    return AttemptOutcome.RETRY

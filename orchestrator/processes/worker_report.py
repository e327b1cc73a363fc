"""What a cancel worker did: a line per answer as it goes, counted for its summaries."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from orchestrator.core.cancel_policy import Attempt, AttemptOutcome
from orchestrator.core.cancel_request import CancelState
from orchestrator.db.cancels import Claim
from orchestrator.processes.recent import keep_recent, put_last
from orchestrator.processes.story import PeriodicSummary

log = logging.getLogger("orchestrator.processes.worker")

FAILED = CancelState.FAILED  # a cancel request's state once it will never be sent again


def tell(
    story: PeriodicSummary,
    finished: Sequence[tuple[Claim, Attempt]],
    states: Mapping[str, str],
) -> None:
    """One line per answer, the only one for its API error (the client does not log
    what it hands back); a request that will never be sent again is an ERROR. The
    tick's answers are counted for the summary at once."""
    settled = errors = 0
    for claim, attempt in finished:
        batch_id, state = claim.batch_id, states.get(claim.batch_id)
        extra = {"batch_id": batch_id, "request_id": attempt.request_id, "action": "cancel_attempt"}
        said = f"cancel {batch_id}: {attempt.outcome.value} -> request {state}"
        if attempt.error:
            said += f": {attempt.error}"
        if state == FAILED:
            errors += 1
            log.error("%s (failed for good: a person must look)", said, extra=extra)
            continue
        if attempt.outcome in (AttemptOutcome.RETRY, AttemptOutcome.AUTH):
            errors += 1
        else:
            settled += 1
        log.info("%s", said, extra=extra)
    counts = {"settled": settled, "errors": errors}
    story.add(**{name: n for name, n in counts.items() if n})


@dataclass
class WorkerReport:
    """What a worker did: exact counts, and the last outcome of each batch it sent.

    A worker that runs until stopped keeps the outcomes of the most recent ``keep``
    batches only (``recent.py``), counting in ``outcomes_left_out`` the older ones let
    go; one drain (``--once``, ``keep`` None) keeps them all."""

    sent: int = 0
    accepted: int = 0
    too_late: int = 0
    retrying: int = 0
    failed: int = 0
    held: int = 0  # not sent: the shared request budget held them back (no attempt)
    released: int = 0
    paused: str | None = None
    db_outages: int = 0
    outcomes: dict[str, str] = field(default_factory=dict)
    outcomes_left_out: int = 0  # older outcomes let go (``keep``); each is counted above
    keep: int | None = None  # outcomes kept (the most recent); None: all

    def count(self, batch_id: str, outcome: AttemptOutcome, *, went_out: bool = True) -> None:
        put_last(self.outcomes, batch_id, outcome.value)
        if self.keep is not None:
            self.outcomes_left_out += keep_recent(self.outcomes, self.keep)
        if not went_out:  # nothing left the host: no attempt to count as sent
            self.held += 1
            return
        self.sent += 1
        if outcome is AttemptOutcome.ACCEPTED:
            self.accepted += 1
        elif outcome is AttemptOutcome.TOO_LATE:
            self.too_late += 1
        elif outcome in (AttemptOutcome.RETRY, AttemptOutcome.AUTH):
            self.retrying += 1
        else:
            self.failed += 1

    def summary(self) -> str:
        text = (
            f"{self.sent} cancel attempt(s): {self.accepted} accepted, {self.too_late} too late, "
            f"{self.retrying} to retry later, {self.failed} failed; "
            f"{self.released} lease(s) released"
        )
        if self.held:
            text += f"; {self.held} held back by the request budget (not sent)"
        if self.paused:
            text += f"; sending paused: {self.paused}"
        if self.outcomes_left_out:
            text += (
                f"; the report's outcomes are the most recent {len(self.outcomes)} batches' "
                f"({self.outcomes_left_out} older left out)"
            )
        return text

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        del data["keep"]
        return data

"""What a cancel worker did, counted as it goes, for its closing summary."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.core.cancel_policy import AttemptOutcome


@dataclass
class WorkerReport:
    sent: int = 0
    accepted: int = 0
    too_late: int = 0
    retrying: int = 0
    failed: int = 0
    released: int = 0
    paused: str | None = None
    db_outages: int = 0
    outcomes: dict[str, str] = field(default_factory=dict)

    def count(self, batch_id: str, outcome: AttemptOutcome) -> None:
        self.sent += 1
        self.outcomes[batch_id] = outcome.value
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
        if self.paused:
            text += f"; sending paused: {self.paused}"
        return text

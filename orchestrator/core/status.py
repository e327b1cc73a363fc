"""The eight Batch statuses and the timestamp field each one sets."""

from __future__ import annotations

from enum import StrEnum

# How a batch we track but have never seen the server answer for is shown and selected.
UNOBSERVED = "unobserved"
# How a selector names "no cancel was ever requested" (`--cancel none`).
NO_CANCEL = "none"
# The states of a cancel request: core/cancel_state.CancelState (CANCEL_STATES there).


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def timestamp_field(self) -> str:
        """The Batch field the server sets when the batch enters this status."""
        return TIMESTAMP_FIELD[self]


TERMINAL: frozenset[BatchStatus] = frozenset(
    {BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)

TIMESTAMP_FIELD: dict[BatchStatus, str] = {
    BatchStatus.VALIDATING: "created_at",
    BatchStatus.FAILED: "failed_at",
    BatchStatus.IN_PROGRESS: "in_progress_at",
    BatchStatus.FINALIZING: "finalizing_at",
    BatchStatus.COMPLETED: "completed_at",
    BatchStatus.EXPIRED: "expired_at",
    BatchStatus.CANCELLING: "cancelling_at",
    BatchStatus.CANCELLED: "cancelled_at",
}

# Every timestamp column of a batch, in the order the API documents them.
TIMESTAMP_FIELDS: tuple[str, ...] = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


_BY_VALUE: dict[str, BatchStatus] = {status.value: status for status in BatchStatus}


def parse_status(value: object) -> BatchStatus | None:
    """The status, or None for a value the API has not documented (kept open, never a crash)."""
    return _BY_VALUE.get(str(value))  # BatchStatus(text) is the same lookup, ~20x dearer

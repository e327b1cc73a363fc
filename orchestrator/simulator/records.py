"""The records the simulator keeps per batch and per file, and their API views."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .files import FailureIndex, FileContent
from .inputs import CANCEL_FAILURE_ERROR, TOKEN_LIMIT_ERROR
from .scenario import Phase, Scenario, Timeline


@dataclass(slots=True, eq=False)
class FileRecord:
    id: str
    purpose: str
    filename: str
    created_at: int
    content: FileContent
    batch_id: str | None = None

    def api_view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.content.size(),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass(slots=True, eq=False)
class BatchRecord:
    id: str
    seq: int
    timeline: Timeline
    endpoint: str
    model: str
    input_file_id: str
    metadata: dict[str, str] | None
    custom_ids: list[str] | None = None
    validation_error: dict[str, Any] | None = None
    terminal_views: int = 0
    announced: bool = False  # its terminal webhook event was made
    files_assigned: bool = False
    output_file_id: str | None = None
    error_file_id: str | None = None
    _failures: FailureIndex | None = field(default=None, repr=False)

    @property
    def scenario(self) -> Scenario:
        return self.timeline.scenario

    @property
    def sort_key(self) -> tuple[float, int, str]:
        return (self.timeline.created_at, self.seq, self.id)

    def custom_id(self, index: int) -> str:
        return self.custom_ids[index] if self.custom_ids is not None else f"req-{index}"

    def failures(self) -> FailureIndex:
        if self._failures is None:
            ratio = self.scenario.failed_request_ratio
            self._failures = FailureIndex(self.id, self.timeline.total, ratio)
        return self._failures


def batch_json(
    record: BatchRecord, phase: Phase, output_id: str | None, error_id: str | None
) -> dict[str, Any]:
    """The Batch object as the API returns it."""
    total = record.timeline.total if phase.counts_total else 0
    failed = record.failures().failures_before(phase.done) if phase.done else 0
    errors = None
    if phase.failure == "validation":
        error = record.validation_error or TOKEN_LIMIT_ERROR
        errors = {"object": "list", "data": [dict(error)]}
    elif phase.failure == "cancel":
        errors = {"object": "list", "data": [dict(CANCEL_FAILURE_ERROR)]}
    return {
        "id": record.id,
        "object": "batch",
        "endpoint": record.endpoint,
        "model": record.model,
        "errors": errors,
        "input_file_id": record.input_file_id,
        "completion_window": "24h",
        "status": phase.status,
        "output_file_id": output_id,
        "error_file_id": error_id,
        "created_at": int(record.timeline.created_at),
        "in_progress_at": _unix(phase.in_progress_at),
        "expires_at": _unix(phase.expires_at),
        "finalizing_at": _unix(phase.finalizing_at),
        "completed_at": _unix(phase.completed_at),
        "failed_at": _unix(phase.failed_at),
        "expired_at": _unix(phase.expired_at),
        "cancelling_at": _unix(phase.cancelling_at),
        "cancelled_at": _unix(phase.cancelled_at),
        "request_counts": {
            "total": total,
            "completed": phase.done - failed,
            "failed": failed,
        },
        "metadata": dict(record.metadata) if record.metadata is not None else None,
        "usage": None,
    }


def _unix(moment: float | None) -> int | None:
    return None if moment is None else int(moment)

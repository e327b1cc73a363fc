"""A Batch object as the server sent it, parsed leniently.

The spec marks seven fields required, but we insist only on the two we cannot
work without (`id`, `status`): every other field may be absent, null, or of a
surprising type, and is then treated as absent. `""` file ids count as absent.
A status string we do not know is kept as text (the enum is open upstream).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator.core.status import TIMESTAMP_FIELDS, BatchStatus, parse_status

REQUIRED_FIELDS = ("id", "status")
USAGE_FIELDS = (
    "usage_input_tokens",
    "usage_cached_tokens",
    "usage_output_tokens",
    "usage_reasoning_tokens",
    "usage_total_tokens",
)


class MalformedBatch(ValueError):
    """The server's Batch object lacks a required field or is not an object."""


@dataclass(frozen=True)
class BatchObservation:
    id: str
    status_text: str
    status: BatchStatus | None
    endpoint: str | None = None
    model: str | None = None
    input_file_id: str | None = None
    completion_window: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    timestamps: Mapping[str, datetime | None] = field(default_factory=dict)
    request_counts: tuple[int, int, int] | None = None  # total, completed, failed
    usage: Mapping[str, int | None] = field(default_factory=dict)
    metadata: dict[str, str] | None = None
    errors: list[dict[str, Any]] | None = None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _unix(value: object) -> datetime | None:
    seconds = _int(value)
    if seconds is None or seconds < 0:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _counts(value: object) -> tuple[int, int, int] | None:
    if not isinstance(value, Mapping):
        return None
    total, completed, failed = (_int(value.get(k)) for k in ("total", "completed", "failed"))
    if total is None or completed is None or failed is None:
        return None
    return (total, completed, failed)


def _usage(value: object) -> dict[str, int | None]:
    if not isinstance(value, Mapping):
        return {}
    input_details = value.get("input_tokens_details")
    output_details = value.get("output_tokens_details")
    return {
        "usage_input_tokens": _int(value.get("input_tokens")),
        "usage_cached_tokens": _int(input_details.get("cached_tokens"))
        if isinstance(input_details, Mapping)
        else None,
        "usage_output_tokens": _int(value.get("output_tokens")),
        "usage_reasoning_tokens": _int(output_details.get("reasoning_tokens"))
        if isinstance(output_details, Mapping)
        else None,
        "usage_total_tokens": _int(value.get("total_tokens")),
    }


def _metadata(value: object) -> dict[str, str] | None:
    if not isinstance(value, Mapping):
        return None
    return {str(k): str(v) for k, v in value.items()}


def _errors(value: object) -> list[dict[str, Any]] | None:
    data = value.get("data") if isinstance(value, Mapping) else None
    if not isinstance(data, list):
        return None
    return [dict(item) for item in data if isinstance(item, Mapping)]


def parse_batch(payload: object) -> BatchObservation:
    """Parse a Batch object. Raises MalformedBatch naming what is missing."""
    if not isinstance(payload, Mapping):
        raise MalformedBatch(f"expected a Batch object, got {type(payload).__name__}")
    missing = [name for name in REQUIRED_FIELDS if payload.get(name) in (None, "")]
    if missing:
        raise MalformedBatch(f"Batch object lacks required field(s): {', '.join(missing)}")
    status_text = str(payload["status"])
    return BatchObservation(
        id=str(payload["id"]),
        status_text=status_text,
        status=parse_status(status_text),
        endpoint=_text(payload.get("endpoint")),
        model=_text(payload.get("model")),
        input_file_id=_text(payload.get("input_file_id")),
        completion_window=_text(payload.get("completion_window")),
        output_file_id=_text(payload.get("output_file_id")),
        error_file_id=_text(payload.get("error_file_id")),
        timestamps={name: _unix(payload.get(name)) for name in TIMESTAMP_FIELDS},
        request_counts=_counts(payload.get("request_counts")),
        usage=_usage(payload.get("usage")),
        metadata=_metadata(payload.get("metadata")),
        errors=_errors(payload.get("errors")),
    )

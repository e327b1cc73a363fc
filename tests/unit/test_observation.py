from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.core.observation import MalformedBatch, parse_batch
from orchestrator.core.status import BatchStatus


def full_batch(**overrides: Any) -> dict[str, Any]:
    batch: dict[str, Any] = {
        "id": "batch_abc",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "model": "gpt-5",
        "errors": None,
        "input_file_id": "file-in",
        "completion_window": "24h",
        "status": "cancelling",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": 1_700_000_000,
        "in_progress_at": 1_700_000_010,
        "expires_at": 1_700_086_400,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": 1_700_000_100,
        "cancelled_at": None,
        "request_counts": {"total": 100, "completed": 23, "failed": 1},
        "metadata": {"team": "search"},
        "usage": {
            "input_tokens": 10,
            "input_tokens_details": {"cached_tokens": 2},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 1},
            "total_tokens": 15,
        },
    }
    batch.update(overrides)
    return batch


def test_a_full_batch_parses() -> None:
    obs = parse_batch(full_batch())
    assert obs.status is BatchStatus.CANCELLING
    assert obs.request_counts == (100, 23, 1)
    assert obs.timestamps["cancelling_at"] == datetime.fromtimestamp(1_700_000_100, UTC)
    assert obs.timestamps["cancelled_at"] is None
    assert obs.usage["usage_cached_tokens"] == 2
    assert obs.metadata == {"team": "search"}


def test_only_id_and_status_are_needed() -> None:
    obs = parse_batch({"id": "batch_x", "status": "validating"})
    assert obs.status is BatchStatus.VALIDATING
    assert obs.request_counts is None
    assert all(v is None for v in obs.timestamps.values())


@pytest.mark.parametrize("payload", [None, [], "batch", {"id": "batch_x"}, {"status": "failed"}])
def test_missing_essentials_are_a_clear_error(payload: object) -> None:
    with pytest.raises(MalformedBatch):
        parse_batch(payload)


def test_empty_string_file_ids_count_as_absent() -> None:
    obs = parse_batch(full_batch(status="completed", output_file_id="", error_file_id=""))
    assert obs.output_file_id is None
    assert obs.error_file_id is None


def test_unknown_status_is_kept_as_text() -> None:
    obs = parse_batch(full_batch(status="paused_for_review"))
    assert obs.status is None
    assert obs.status_text == "paused_for_review"


@pytest.mark.parametrize(
    "field",
    ["request_counts", "usage", "metadata", "errors", "created_at", "model"],
)
@pytest.mark.parametrize("value", [None, "garbage", 3.5, [], True, -1])
def test_odd_values_in_optional_fields_are_treated_as_absent(field: str, value: object) -> None:
    obs = parse_batch(full_batch(**{field: value}))
    assert obs.id == "batch_abc"


def test_errors_data_is_kept() -> None:
    errors = {"object": "list", "data": [{"code": "token_limit_exceeded", "message": "m"}]}
    obs = parse_batch(full_batch(status="failed", errors=errors))
    assert obs.errors == [{"code": "token_limit_exceeded", "message": "m"}]

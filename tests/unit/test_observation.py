from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.core.observation import TEXT_LIMITS, MalformedBatch, _Fields, parse_batch
from orchestrator.core.status import TIMESTAMP_FIELDS, BatchStatus, parse_status


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


class Str(str):
    """A string of another type: not the fast path's, still a string."""


HOSTILE: list[object] = [
    None,
    "",
    "ok-value_1",
    "x" * 16,
    "x" * 17,
    "x" * 128,
    "x" * 129,
    "x" * 300,
    "nul\x00inside",
    "file/../etc",
    Str("file-abc"),
    0,
    -1,
    1_700_000_000,
    253_402_300_799,
    253_402_300_800,
    2**31 - 1,
    2**31,
    2**63,
    2**200,
    1_700_000_000.0,
    1.5,
    float("nan"),
    True,
    False,
    [],
    {},
    {"total": 1, "completed": 0, "failed": 0},
    {"total": True, "completed": 0, "failed": 0},
    {"total": 2**31, "completed": 0, "failed": 0},
    {"total": 3.0, "completed": 1, "failed": -1},
    {"total": 3},
]
FIELDS = [
    "endpoint",
    "model",
    "completion_window",
    "input_file_id",
    "output_file_id",
    "error_file_id",
    "created_at",
    "cancelling_at",
    "request_counts",
    "usage",
    "metadata",
    "errors",
]


def careful(payload: dict[str, Any]) -> tuple[object, ...]:
    """Every optional field as ``_Fields`` reads it, with no fast path: what
    parse_batch's fast paths must give too (the value and the refusals)."""
    read = _Fields()
    values = (
        read.text("endpoint", payload.get("endpoint"), TEXT_LIMITS["endpoint"]),
        read.text("model", payload.get("model"), TEXT_LIMITS["model"]),
        read.file_id("input_file_id", payload.get("input_file_id")),
        read.text(
            "completion_window",
            payload.get("completion_window"),
            TEXT_LIMITS["completion_window"],
        ),
        read.file_id("output_file_id", payload.get("output_file_id")),
        read.file_id("error_file_id", payload.get("error_file_id")),
        {name: read.timestamp(name, payload.get(name)) for name in TIMESTAMP_FIELDS},
        read.counts(payload.get("request_counts")),
        read.usage(payload.get("usage")),
        read.metadata(payload.get("metadata")),
        read.errors(payload.get("errors")),
    )
    return (*values, tuple(read.anomalies))


def fast(payload: dict[str, Any]) -> tuple[object, ...]:
    obs = parse_batch(payload)
    return (
        obs.endpoint,
        obs.model,
        obs.input_file_id,
        obs.completion_window,
        obs.output_file_id,
        obs.error_file_id,
        dict(obs.timestamps),
        obs.request_counts,
        dict(obs.usage),
        obs.metadata,
        obs.errors,
        obs.anomalies,
    )


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v)[:30])
def test_the_fast_paths_accept_and_refuse_exactly_what_the_careful_reader_does(
    field: str, value: object
) -> None:
    payload = full_batch(**{field: value})
    assert repr(fast(payload)) == repr(careful(payload))  # repr: NaN is not equal to itself


def test_every_status_is_recognised_and_nothing_else() -> None:
    for status in BatchStatus:
        assert parse_status(status.value) is status
        assert parse_status(status) is status
    assert parse_status("Cancelling") is None
    assert parse_status(None) is None
    assert parse_status("cancelling\x00") is None


def test_metadata_and_errors_nested_past_what_can_be_stored_are_refused_not_fatal() -> None:
    deep: object = []
    for _ in range(1000):  # str() of it overflows the stack; orjson writes 254 levels
        deep = [deep]
    errors = {"object": "list", "data": [{"code": "c", "param": deep, "line": 3}]}
    metadata = {"team": "search", "nested": {"a": deep}, "n": 7}
    obs = parse_batch(full_batch(status="failed", errors=errors, metadata=metadata))
    assert obs.metadata == {"team": "search", "n": "7"}
    assert obs.errors == [{"code": "c", "line": 3}]
    assert [a.split(" refused")[0] for a in obs.anomalies] == [
        "metadata.'nested'=dict",
        "errors.data=list",
    ]
    assert "1 field(s) holding an object or a list" in obs.anomalies[1]


def test_metadata_null_and_booleans_are_refused_and_numbers_kept_as_their_json_text() -> None:
    """The API's metadata values are strings. ``str()`` of null or a boolean was Python's
    text ("None", "True"), which the server never sent, and `--metadata KEY=None`
    matched it: refused and noted, as an object is. A number is its JSON text; one that
    JSON text cannot hold (not finite, past 64 bits: only a caller's, never a parsed
    answer's) is refused too."""
    metadata = {
        "team": "search",
        "a": None,
        "b": True,
        "c": False,
        "n": 7,
        "x": 1.5,
        "big": 1e300,
        "nan": float("nan"),
        "huge": 2**64,
    }
    obs = parse_batch(full_batch(metadata=metadata))
    assert obs.metadata == {"team": "search", "n": "7", "x": "1.5", "big": "1e+300"}
    assert [a.split(" refused")[0] for a in obs.anomalies] == [
        "metadata.'a'=None",
        "metadata.'b'=True",
        "metadata.'c'=False",
        "metadata.'nan'=nan",
        "metadata.'huge'=18446744073709551616",
    ]

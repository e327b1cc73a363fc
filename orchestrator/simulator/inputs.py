"""Validation of what clients send: batch-create bodies, metadata, input files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .config import BATCH_ENDPOINTS
from .errors import bad_request
from .scenario import Scenario

SCENARIO_METADATA_KEY = "sim_scenario"
TOKEN_LIMIT_ERROR: dict[str, Any] = {
    "code": "token_limit_exceeded",
    "message": (
        "Enqueued token limit reached for the simulated model in organization org-simulator. "
        "Limit: 2,000,000 enqueued tokens. Please try again once some in_progress batches "
        "have been completed."
    ),
    "param": None,
    "line": None,
}
CANCEL_FAILURE_ERROR: dict[str, Any] = {
    "code": "internal_error",
    "message": "The batch failed while it was being cancelled.",
    "param": None,
    "line": None,
}


@dataclass(frozen=True, slots=True)
class CreateRequest:
    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None
    overrides: dict[str, object]


def validate_metadata(metadata: object) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise bad_request("Invalid type for 'metadata': expected an object.", "metadata")
    if len(metadata) > 16:
        raise bad_request("Invalid 'metadata': too many keys (max 16).", "metadata")
    result: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise bad_request("Invalid 'metadata': keys and values must be strings.", "metadata")
        if len(key) > 64 or len(value) > 512:
            raise bad_request("Invalid 'metadata': key or value too long.", "metadata")
        result[key] = value
    return result


def scenario_overrides(metadata: Mapping[str, str] | None) -> dict[str, object]:
    """The ``sim_scenario`` metadata value: a JSON object of Scenario overrides."""
    if not metadata or SCENARIO_METADATA_KEY not in metadata:
        return {}
    try:
        overrides = orjson.loads(metadata[SCENARIO_METADATA_KEY])
    except orjson.JSONDecodeError:
        overrides = None
    if not isinstance(overrides, dict):
        raise bad_request("metadata.sim_scenario must be a JSON object.", "metadata")
    try:
        Scenario().with_overrides(overrides)
    except ValueError as exc:
        raise bad_request(f"metadata.sim_scenario: {exc}", "metadata") from exc
    return overrides


def parse_create(body: object) -> CreateRequest:
    if not isinstance(body, Mapping):
        raise bad_request("The request body must be a JSON object.")
    input_file_id = body.get("input_file_id")
    if not isinstance(input_file_id, str) or not input_file_id:
        raise bad_request("Missing required parameter: 'input_file_id'.", "input_file_id")
    endpoint = body.get("endpoint")
    if endpoint not in BATCH_ENDPOINTS:
        raise bad_request(
            f"Invalid value for 'endpoint': {endpoint!r} is not a supported endpoint.", "endpoint"
        )
    assert isinstance(endpoint, str)
    if body.get("completion_window") != "24h":
        raise bad_request(
            "Invalid value for 'completion_window': only '24h' is supported.", "completion_window"
        )
    metadata = validate_metadata(body.get("metadata"))
    return CreateRequest(input_file_id, endpoint, metadata, scenario_overrides(metadata))


@dataclass(frozen=True, slots=True)
class ParsedInput:
    custom_ids: list[str]
    model: str | None
    error: dict[str, Any] | None
    """A batch-level validation error: the batch will end ``failed`` with it."""


def _line_error(code: str, message: str, line: int) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def parse_input_file(data: bytes, endpoint: str) -> ParsedInput:
    """Read the custom_ids of an uploaded JSONL input file, as batch validation would."""
    custom_ids: list[str] = []
    seen: set[str] = set()
    model: str | None = None
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            line = None
        if not isinstance(line, dict):
            error = _line_error("invalid_json_line", "This line is not valid JSON.", number)
            return ParsedInput(custom_ids, model, error)
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str) or custom_id in seen:
            message = "The custom_id is missing or not unique within the batch."
            return ParsedInput(
                custom_ids, model, _line_error("duplicate_custom_id", message, number)
            )
        if line.get("url") != endpoint:
            message = f"The url of this request does not match the batch endpoint {endpoint}."
            return ParsedInput(custom_ids, model, _line_error("mismatched_url", message, number))
        body = line.get("body")
        if model is None and isinstance(body, dict) and isinstance(body.get("model"), str):
            model = body["model"]
        seen.add(custom_id)
        custom_ids.append(custom_id)
    if not custom_ids:
        error = _line_error("empty_file", "The input file contains no requests.", 1)
        return ParsedInput(custom_ids, model, error)
    return ParsedInput(custom_ids, model, None)

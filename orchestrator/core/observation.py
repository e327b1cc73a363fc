"""A Batch object as the server sent it, checked field by field.

The spec marks seven fields required, but we insist only on the two we cannot
work without (`id`, `status`) and, when we asked about one batch, that the
answer is that batch (`WrongBatch` otherwise: never applied). Every other
field may be absent or null, and is then treated as absent; `""` file ids count
as absent. A status string we do not know is kept as text (the enum is open
upstream).

A field that is present but cannot be true (a count of 2**64, a negative token
count, a string where a number belongs, a file id that could change a URL, a
timestamp past the year 9999, text longer than its column) is refused: it is
treated as absent, so what we stored stays, and the refusal is listed in
`BatchObservation.anomalies` for the caller to record. The rest of the object
still counts. The limits are the columns' (`orchestrator.db.models`); a unit
test keeps the two in step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from orchestrator.core.ids import ID_PATTERN
from orchestrator.core.status import TIMESTAMP_FIELDS, BatchStatus, parse_status

REQUIRED_FIELDS = ("id", "status")
USAGE_FIELDS = (
    "usage_input_tokens",
    "usage_cached_tokens",
    "usage_output_tokens",
    "usage_reasoning_tokens",
    "usage_total_tokens",
)
INT_MAX = 2**31 - 1  # request_counts_*: INTEGER (PostgreSQL's is 32-bit)
BIGINT_MAX = 2**63 - 1  # usage_*: BIGINT
# 9999-12-31T23:59:59Z, the last second a datetime holds. Read back whole only in UTC:
# every PostgreSQL session is (db/engine.py), and nothing turns a time into another zone.
LATEST_UNIX = 253_402_300_799
TEXT_LIMITS = {"endpoint": 128, "model": 256, "completion_window": 16}
STATUS_CHARS = 32
_SHOWN = 60


class MalformedBatch(ValueError):
    """The server's Batch object lacks a required field or is not an object."""


class WrongBatch(MalformedBatch):
    """We asked about one batch and the server answered with another: never applied."""

    def __init__(self, asked: str, answered: str) -> None:
        super().__init__(
            f"asked about {asked}, the server answered with the Batch object of "
            f"{answered}: not applied"
        )
        self.asked = asked
        self.answered = answered


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
    anomalies: tuple[str, ...] = ()  # fields refused, each naming the field and the value


def shown(value: object, limit: int = _SHOWN) -> str:
    """`value` for a message: repr, bounded, safe for any size of integer."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<a {value.bit_length()}-bit integer>"
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Fields:
    """Reads optional fields, noting each one refused."""

    def __init__(self) -> None:
        self.anomalies: list[str] = []

    def refuse(self, name: str, value: object, why: str) -> None:
        self.anomalies.append(f"{name}={shown(value)} refused ({why}); kept what was stored")

    def integer(self, name: str, value: object, maximum: int) -> int | None:
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.refuse(name, value, "not a whole number")
            return None
        if not 0 <= value <= maximum:
            self.refuse(name, value, f"outside 0..{maximum}")
            return None
        return value

    def text(self, name: str, value: object, limit: int) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            self.refuse(name, value, "not a string")
            return None
        if len(value) > limit or "\x00" in value:
            self.refuse(name, value, f"longer than {limit} characters or holding NUL")
            return None
        return value

    def file_id(self, name: str, value: object) -> str | None:
        text = self.text(name, value, 128)
        if text is not None and ID_PATTERN.fullmatch(text) is None:
            self.refuse(name, value, "not a file id")
            return None
        return text

    def timestamp(self, name: str, value: object) -> datetime | None:
        seconds = self.integer(name, value, LATEST_UNIX)
        return None if seconds is None else datetime.fromtimestamp(seconds, UTC)

    def mapping(self, name: str, value: object) -> Mapping[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.refuse(name, value, "not an object")
            return None
        return value

    def counts(self, value: object) -> tuple[int, int, int] | None:
        counts = self.mapping("request_counts", value)
        if counts is None:
            return None
        total, completed, failed = (
            self.integer(f"request_counts.{k}", counts.get(k), INT_MAX)
            for k in ("total", "completed", "failed")
        )
        if total is None or completed is None or failed is None:
            return None
        return (total, completed, failed)

    def usage(self, value: object) -> dict[str, int | None]:
        usage = self.mapping("usage", value)
        if usage is None:
            return {}
        inputs = self.mapping("usage.input_tokens_details", usage.get("input_tokens_details"))
        outputs = self.mapping("usage.output_tokens_details", usage.get("output_tokens_details"))
        return {
            "usage_input_tokens": self.integer(
                "usage.input_tokens", usage.get("input_tokens"), BIGINT_MAX
            ),
            "usage_cached_tokens": self.integer(
                "usage.input_tokens_details.cached_tokens",
                inputs.get("cached_tokens") if inputs else None,
                BIGINT_MAX,
            ),
            "usage_output_tokens": self.integer(
                "usage.output_tokens", usage.get("output_tokens"), BIGINT_MAX
            ),
            "usage_reasoning_tokens": self.integer(
                "usage.output_tokens_details.reasoning_tokens",
                outputs.get("reasoning_tokens") if outputs else None,
                BIGINT_MAX,
            ),
            "usage_total_tokens": self.integer(
                "usage.total_tokens", usage.get("total_tokens"), BIGINT_MAX
            ),
        }

    def metadata(self, value: object) -> dict[str, str] | None:
        """The API's metadata values are strings: a number is kept as its JSON text
        (as orjson writes it); anything else is refused: null and booleans (``str()``
        made Python's "None" and "True", text the server never sent, which `--metadata`
        filters then matched), an object or a list (its text could be any depth:
        ``str()`` of one nested a thousand levels overflows the stack), and a number
        JSON text cannot hold (not finite, past 64 bits: never one a parsed answer
        holds, and ``str()`` of a huge integer raises)."""
        metadata = self.mapping("metadata", value)
        if metadata is None:
            return None
        kept: dict[str, str] = {}
        for key, item in metadata.items():
            if isinstance(item, str):
                kept[str(key)] = str(item)
            elif (number := _json_number(item)) is not None:
                kept[str(key)] = number
            else:
                numeric = isinstance(item, int | float) and not isinstance(item, bool)
                why = "a number JSON text cannot hold" if numeric else "not a string"
                self.refuse(f"metadata.{shown(key, 40)}", item, why)
        return kept

    def errors(self, value: object) -> list[dict[str, Any]] | None:
        """Each error's fields (code, message, param, line: strings and numbers); one
        nested in an object or a list is dropped, noted once (it could be deeper than
        the database's JSON can be written)."""
        errors = self.mapping("errors", value)
        data = errors.get("data") if errors is not None else None
        if data is None:
            return None
        if not isinstance(data, list):
            self.refuse("errors.data", data, "not a list")
            return None
        entries = [dict(item) for item in data if isinstance(item, Mapping)]
        nested = sum(isinstance(v, dict | list) for entry in entries for v in entry.values())
        if not nested:
            return entries
        self.refuse("errors.data", data, f"{nested} field(s) holding an object or a list")
        return [{k: v for k, v in e.items() if not isinstance(v, dict | list)} for e in entries]


def parse_batch(payload: object, expected_id: str | None = None) -> BatchObservation:
    """Parse a Batch object; with `expected_id`, the answer about that batch.

    Raises MalformedBatch naming what is missing or wrong, WrongBatch when the
    object is another batch's.
    """
    batch, batch_id, status_text = _identify(payload, expected_id)
    # Each field is taken at once when it is what a sound answer holds (a plain string
    # within its limit, a whole number in range, null); anything else goes through
    # ``_Fields``, which decides and notes the refusal. The worker parses an answer per
    # cancel: the fast paths cut its cost by ~40%, never what is accepted. Fields are
    # read in the order their anomalies are listed.
    read = _Fields()
    get = batch.get
    endpoint = _text(read, "endpoint", get("endpoint"))
    model = _text(read, "model", get("model"))
    input_file_id = _file_id(read, "input_file_id", get("input_file_id"))
    window = _text(read, "completion_window", get("completion_window"))
    output_file_id = _file_id(read, "output_file_id", get("output_file_id"))
    error_file_id = _file_id(read, "error_file_id", get("error_file_id"))
    timestamps = _timestamps(read, batch)
    counts = get("request_counts")
    usage = get("usage")
    metadata = get("metadata")
    errors = get("errors")
    observation = BatchObservation(
        id=batch_id,
        status_text=status_text,
        status=parse_status(status_text),
        endpoint=endpoint,
        model=model,
        input_file_id=input_file_id,
        completion_window=window,
        output_file_id=output_file_id,
        error_file_id=error_file_id,
        timestamps=timestamps,
        request_counts=_counts(counts) or read.counts(counts),
        usage={} if usage is None else read.usage(usage),
        metadata=None if metadata is None else read.metadata(metadata),
        errors=None if errors is None else read.errors(errors),
    )
    if not read.anomalies:
        return observation
    return replace(observation, anomalies=tuple(read.anomalies))


def _identify(payload: object, expected_id: str | None) -> tuple[Mapping[str, Any], str, str]:
    """The object, its id and its status text: what an answer cannot do without."""
    if not isinstance(payload, Mapping):
        raise MalformedBatch(f"expected a Batch object, got {type(payload).__name__}")
    missing = [name for name in REQUIRED_FIELDS if payload.get(name) in (None, "")]
    if missing:
        raise MalformedBatch(f"Batch object lacks required field(s): {', '.join(missing)}")
    batch_id, status_text = payload["id"], payload["status"]
    if not isinstance(batch_id, str) or ID_PATTERN.fullmatch(batch_id) is None:
        raise MalformedBatch(f"Batch object's id {shown(batch_id)} is not a batch id")
    if expected_id is not None and batch_id != expected_id:
        raise WrongBatch(expected_id, batch_id)
    if not isinstance(status_text, str):
        raise MalformedBatch(f"Batch object's status {shown(status_text)} is not a string")
    if len(status_text) > STATUS_CHARS:
        status_text = shown(status_text, STATUS_CHARS)  # unknown anyway; kept short
    return payload, batch_id, status_text


def _text(read: _Fields, name: str, value: object) -> str | None:
    limit = TEXT_LIMITS[name]
    if type(value) is str and 0 < len(value) <= limit and "\x00" not in value:
        return value
    return read.text(name, value, limit)


def _timestamps(read: _Fields, batch: Mapping[str, Any]) -> dict[str, datetime | None]:
    timestamps: dict[str, datetime | None] = {}
    for name in TIMESTAMP_FIELDS:
        value = batch.get(name)
        if value is None:
            timestamps[name] = None
        elif type(value) is int and 0 <= value <= LATEST_UNIX:
            timestamps[name] = datetime.fromtimestamp(value, UTC)
        else:
            timestamps[name] = read.timestamp(name, value)
    return timestamps


def _json_number(value: object) -> str | None:
    """A number's JSON text as orjson writes it; None for anything else, and for a
    number orjson cannot write (an integer past 64 bits; not finite, which it writes as
    null)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError: past 64 bits, or a float's subclass
        return None


def _file_id(read: _Fields, name: str, value: object) -> str | None:
    if value is None:
        return None
    if type(value) is str and ID_PATTERN.fullmatch(value) is not None:
        return value  # within 128 characters, no NUL: as _Fields.file_id takes it
    return read.file_id(name, value)


def _counts(value: object) -> tuple[int, int, int] | None:
    """``_Fields.counts`` of a sound object (three whole numbers in range), else None."""
    if type(value) is not dict:
        return None
    total, completed, failed = value.get("total"), value.get("completed"), value.get("failed")
    if (
        type(total) is int
        and type(completed) is int
        and type(failed) is int
        and 0 <= total <= INT_MAX
        and 0 <= completed <= INT_MAX
        and 0 <= failed <= INT_MAX
    ):
        return (total, completed, failed)
    return None

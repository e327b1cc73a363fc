"""Standard Webhooks verification and the little we read of an OpenAI batch event. Pure.

OpenAI signs each delivery (reference, section 2.3): ``webhook-signature`` lists
``v1,<base64 HMAC-SHA256>`` entries, separated by spaces, over
``{webhook-id}.{webhook-timestamp}.{raw body}``, keyed with the base64-decoded part
of the secret after ``whsec_``. Any one matching entry, under any one of our
secrets (several during a rotation), is enough. The timestamp must be within the
tolerance of ``now`` in both directions, so a captured delivery cannot be replayed
later and a clock far ahead is noticed.

Nothing in the body is trusted beyond the batch id, and that only after the
signature matched: the event only makes the batch due for a poll, and the poll's
``GET`` decides what happened.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from orchestrator.core.ids import validate_batch_id
from orchestrator.errors import InvalidBatchId

__all__ = [
    "BATCH_EVENT_TYPES",
    "TOLERANCE_SECONDS",
    "BatchEvent",
    "WebhookRejected",
    "parse_event",
    "parse_secrets",
    "sign",
    "verify",
]

TOLERANCE_SECONDS = 300
BATCH_EVENT_TYPES = frozenset(
    {"batch.completed", "batch.failed", "batch.expired", "batch.cancelled"}
)
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_WEBHOOK_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_MAX_SIGNATURES = 16  # a header listing more is not from a sender rotating keys


class WebhookRejected(ValueError):
    """A delivery we refuse; the text names what was wrong and never holds a secret."""


def parse_secrets(raw: str) -> list[bytes]:
    """HMAC keys from ``OPENAI_WEBHOOK_SECRET``: comma-separated, each ``whsec_<base64>``
    (or, as the official client allows, a raw secret). Raises ValueError naming the
    position of a bad entry, never its value."""
    keys: list[bytes] = []
    for position, entry in enumerate(raw.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        if entry.startswith("whsec_"):
            try:
                key = base64.b64decode(entry[6:], validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(
                    f"secret {position} starts with whsec_ but the rest is not base64"
                ) from None
        else:
            key = entry.encode()
        if not key:
            raise ValueError(f"secret {position} is empty")
        keys.append(key)
    return keys


def _signature(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> bytes:
    signed = webhook_id.encode() + b"." + timestamp.encode() + b"." + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """A ``webhook-signature`` value for one key (the simulator's sender uses it)."""
    return "v1," + _signature(key, webhook_id, str(timestamp), body).decode()


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise WebhookRejected(f"missing header {name}")
    return value


def verify(
    headers: Mapping[str, str],
    body: bytes,
    keys: Sequence[bytes],
    *,
    now: datetime,
    tolerance: int = TOLERANCE_SECONDS,
) -> str:
    """Check a delivery; return its ``webhook-id`` or raise ``WebhookRejected``.

    ``headers`` must be keyed by lower-case names. Every candidate is compared in
    constant time, and all are compared, so timing says nothing about which failed.
    """
    if not keys:
        raise WebhookRejected("no webhook secret is configured")
    webhook_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    if _WEBHOOK_ID.fullmatch(webhook_id) is None:
        raise WebhookRejected("webhook-id is not 1-128 letters, digits or _.:-")
    if _TIMESTAMP.fullmatch(timestamp) is None:
        raise WebhookRejected("webhook-timestamp is not whole Unix seconds")
    age = now.timestamp() - int(timestamp)
    if age > tolerance:
        raise WebhookRejected(f"webhook-timestamp is {int(age)} s old (tolerance {tolerance} s)")
    if -age > tolerance:
        raise WebhookRejected(
            f"webhook-timestamp is {int(-age)} s in the future (tolerance {tolerance} s)"
        )
    offered = [s[3:].encode() for s in signatures.split()[:_MAX_SIGNATURES] if s.startswith("v1,")]
    matched = False
    for key in keys:
        expected = _signature(key, webhook_id, timestamp, body)
        for candidate in offered:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookRejected("no v1 signature matches any configured secret")
    return webhook_id


@dataclass(frozen=True)
class BatchEvent:
    event_id: str  # the event's own id (stable across redeliveries, like webhook-id)
    type: str  # one of BATCH_EVENT_TYPES, or another event type we only record
    batch_id: str | None  # set for batch events only, and only when it is a valid id


def parse_event(body: bytes) -> BatchEvent:
    """Read ``{id, type, data: {id}}`` from a verified body; raise WebhookRejected when
    it is not a JSON object with a string type. A batch event with an invalid batch id
    is rejected: we do not store or act on what we cannot name safely."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected("the body is not JSON") from None
    if not isinstance(data, dict):
        raise WebhookRejected("the body is not a JSON object")
    event_type = data.get("type")
    event_id = data.get("id")
    if not isinstance(event_type, str) or not 0 < len(event_type) <= 64:
        raise WebhookRejected("the event has no type")
    if not isinstance(event_id, str) or _WEBHOOK_ID.fullmatch(event_id) is None:
        event_id = ""
    if event_type not in BATCH_EVENT_TYPES:
        return BatchEvent(event_id=event_id, type=event_type, batch_id=None)
    inner = data.get("data")
    batch_id = inner.get("id") if isinstance(inner, dict) else None
    try:
        validate_batch_id(batch_id)
    except InvalidBatchId as exc:
        raise WebhookRejected(f"{event_type} event: {exc}") from None
    return BatchEvent(event_id=event_id, type=event_type, batch_id=batch_id)

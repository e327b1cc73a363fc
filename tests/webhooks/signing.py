"""Build signed deliveries for the tests, as OpenAI would send them."""

from __future__ import annotations

import base64
import json
import time

from orchestrator.core.webhooks import sign

SECRET_BYTES = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(SECRET_BYTES).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another key, not ours, 32 bytes!").decode()


def key_of(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def event_body(batch_id: str, kind: str = "completed", event_id: str = "evt_1") -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": f"batch.{kind}",
            "created_at": 1_700_000_000,
            "data": {"id": batch_id},
        }
    ).encode()


def signed_headers(
    body: bytes,
    *,
    secret: str = SECRET,
    webhook_id: str = "msg_1",
    timestamp: int | None = None,
) -> dict[str, str]:
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(key_of(secret), webhook_id, stamp, body),
        "content-type": "application/json",
    }

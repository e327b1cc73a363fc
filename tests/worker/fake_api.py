"""A scripted Batch API behind httpx.MockTransport, for worker tests without sockets."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

SECRET = "sk-test-NEVER-LOG-THIS-0123456789"

Reply = Callable[[httpx.Request], httpx.Response]


def batch_body(batch_id: str, status: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": batch_id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-in",
        "completion_window": "24h",
        "status": status,
        "created_at": 1_767_225_600,
        "request_counts": {"total": 10, "completed": 2, "failed": 0},
    }
    if status == "cancelling":
        body["cancelling_at"] = 1_767_225_700
    body.update(extra)
    return body


def error(status: int, message: str, **headers: str) -> httpx.Response:
    envelope = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    }
    return httpx.Response(status, json=envelope, headers={"x-request-id": "req_err", **headers})


class FakeApi:
    """Per-batch scripted replies for cancel and retrieve; counts every call."""

    def __init__(self) -> None:
        self.cancel_replies: dict[str, list[Reply]] = {}
        self.retrieve_replies: dict[str, list[Reply]] = {}
        self.calls: Counter[tuple[str, str]] = Counter()
        self.auth_headers: set[str] = set()
        self._lock = threading.Lock()

    def on_cancel(self, batch_id: str, *replies: Reply) -> None:
        self.cancel_replies[batch_id] = list(replies)

    def on_retrieve(self, batch_id: str, *replies: Reply) -> None:
        self.retrieve_replies[batch_id] = list(replies)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.strip("/").split("/")
        with self._lock:
            self.auth_headers.add(request.headers.get("authorization", ""))
            if parts[-1] == "cancel":
                batch_id, kind, table = parts[-2], "cancel", self.cancel_replies
            else:
                batch_id, kind, table = parts[-1], "retrieve", self.retrieve_replies
            self.calls[(kind, batch_id)] += 1
            replies = table.get(batch_id)
            if not replies:
                return default_reply(kind, batch_id)
            reply = replies.pop(0) if len(replies) > 1 else replies[0]
        return reply(request)


def default_reply(kind: str, batch_id: str) -> httpx.Response:
    status = "cancelling" if kind == "cancel" else "in_progress"
    return httpx.Response(
        200, json=batch_body(batch_id, status), headers={"x-request-id": f"req_{kind}"}
    )


def ok(batch_id: str, status: str, **extra: Any) -> Reply:
    return lambda _r: httpx.Response(
        200,
        content=json.dumps(batch_body(batch_id, status, **extra)),
        headers={"x-request-id": "req_ok", "content-type": "application/json"},
    )


def fail(status: int, message: str = "nope", **headers: str) -> Reply:
    return lambda _r: error(status, message, **headers)

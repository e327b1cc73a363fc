"""What the sync and async clients share about one JSON answer: how big it may be,
how it is judged, what is logged. Reading it (sync or async) is the client's part.

Judging needs only an answer's status and headers (``Answered``): an
``httpx.Response`` has them, and so has a ``HeadAnswer``, the async client's lean
exchange's answer (no httpx object built)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from orchestrator.api.bodies import BodyTooLarge
from orchestrator.api.errors import ApiAborted, ApiAnswerTooLarge, ApiCall
from orchestrator.api.failures import ERROR_BODY_BYTES, Answered, Failures
from orchestrator.api.http11 import Head
from orchestrator.api.retrying import Outcome
from orchestrator.core.retry_policy import Verdict, VerdictKind, classify

__all__ = [
    "Answered",
    "ApiResult",
    "HeadAnswer",
    "answer_cap",
    "decode_object",
    "json_outcome",
    "log_response",
    "too_large",
    "transport_outcome",
]

logger = logging.getLogger("orchestrator.api.client")  # one logger for the client's story

NOT_RETRIED = VerdictKind.REJECTED  # the verdict of an answer asking again now cannot change


@dataclass(frozen=True)
class ApiResult:
    """A decoded JSON object from a 2xx response."""

    data: dict[str, Any]
    status: int
    request_id: str | None
    attempts: int


class HeadAnswer:
    """An answer's status and headers from its parsed ``Head``, as an httpx.Response
    gives them: names lower-cased (look them up so), a repeated header's values joined
    with ", ", every name and value decoded alike: ASCII, else UTF-8, else Latin-1."""

    __slots__ = ("headers", "status_code")

    def __init__(self, head: Head) -> None:
        self.status_code = head.status
        raw = head.headers
        try:
            pairs = [(name.decode("ascii"), value.decode("ascii")) for name, value in raw]
        except UnicodeDecodeError:
            pairs = _decoded(raw)
        fields = dict(pairs)
        if len(fields) < len(pairs):  # a header repeated: its values joined
            fields = {}
            for name, value in pairs:
                fields[name] = f"{fields[name]}, {value}" if name in fields else value
        self.headers: Mapping[str, str] = fields


def _decoded(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    try:
        return [(name.decode("utf-8"), value.decode("utf-8")) for name, value in raw]
    except UnicodeDecodeError:
        return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]


def decode_object(content: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def answer_cap(
    response: Answered, max_answer_bytes: int, *, excerpt: bool = False
) -> tuple[int, bool]:
    """How much of the body to read, and whether past it to cut (an error's excerpt, or
    any answer read only to be quoted: a 2xx download that is not the file) rather
    than fail (a 2xx answer, which must be whole)."""
    whole = 200 <= response.status_code < 300 and not excerpt
    return (max_answer_bytes, False) if whole else (ERROR_BODY_BYTES, True)


def too_large(
    call: ApiCall, number: int, response: Answered, exc: BodyTooLarge, failures: Failures
) -> Outcome[Any]:
    error = ApiAnswerTooLarge(
        call,
        status=response.status_code,
        detail=str(exc),
        cap=exc.cap,
        request_id=failures.request_id(response),
    )
    return Outcome(Verdict(NOT_RETRIED, "answer too large"), number, error=error)


def json_outcome(
    call: ApiCall,
    number: int,
    response: Answered,
    answer: tuple[bytes, str | None],
    request_id: str | None,
    *,
    failures: Failures,
    now: datetime,
) -> Outcome[ApiResult]:
    """Judge a JSON call's answer (its body read, or why it could not be decoded)."""
    content, problem = answer
    data = decode_object(content) if problem is None else None
    verdict = classify(response.status_code, response.headers, now, body_is_json=data is not None)
    if verdict.kind is VerdictKind.OK and data is not None:
        result = ApiResult(data, response.status_code, request_id, number)
        return Outcome(verdict, number, payload=result)
    error = failures.response_error(
        call, response, verdict, content, data, request_id, problem=problem
    )
    return Outcome(verdict, number, error=error)


def log_response(
    call: ApiCall,
    response: Answered,
    started: float,
    extra: dict[str, str | None],
    failures: Failures,
) -> str | None:
    """Log the answer's status at DEBUG; its x-request-id, scrubbed."""
    request_id = failures.request_id(response)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "%s -> HTTP %d, x-request-id=%s, %.3fs",
            call,
            response.status_code,
            request_id,
            time.perf_counter() - started,
            extra={**extra, "request_id": request_id},
        )
    return request_id


def transport_outcome(
    call: ApiCall,
    number: int,
    exc: Exception,
    started: float,
    extra: dict[str, str | None],
    failures: Failures,
) -> Outcome[Any]:
    """No (complete) answer: the network failed, a limit ended the call, or the
    process is stopping (never retried)."""
    error = failures.transport_error(call, exc)
    if isinstance(error, ApiAborted):
        return Outcome(Verdict(NOT_RETRIED, "the process is stopping"), number, error=error)
    logger.debug(
        "%s -> no response after %.3fs: %s",
        call,
        time.perf_counter() - started,
        error.detail,
        extra=extra,
    )
    return Outcome(classify(error.kind), number, error=error)

"""Turning what the server sent (or failed to send) into the errors of errors.py.

Every text taken from a response is scrubbed of the API key and cut short; a
non-JSON body is quoted as a short excerpt with its tags stripped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from orchestrator.api.errors import (
    ApiAborted,
    ApiCall,
    ApiProtocolError,
    ApiStatusError,
    ApiTransportError,
    status_error_class,
)
from orchestrator.api.limits import Aborted, LimitReached
from orchestrator.core.observation import shown
from orchestrator.core.retry_policy import TransportFailure, Verdict
from orchestrator.secret import Secret

__all__ = ["ERROR_BODY_BYTES", "Answered", "Failure", "Failures"]

ERROR_BODY_BYTES = 64 * 1024  # read at most this much of an error response
_EXCERPT_CHARS = 200
# Tags are stripped from this much of the body only: the excerpt keeps 200 characters,
# and the cost of stripping must not grow with what a server chooses to send.
_STRIPPED_CHARS = 4096
_TEXT_CHARS = 500
# Every pattern here fails fast: none can scan past the next '<' (or, for a closing
# tag, past the whitespace after its name) before giving up on a start, so stripping
# is linear. `<[^>]*>` and `<(script|style)\b.*?</\1>` scanned to the end of the body
# from every '<': 64 KiB of '<' or '<script' cost seconds of CPU, holding the GIL.
_TAG = re.compile(r"<[^<>]*>")
_HIDDEN_START = re.compile(r"<(script|style)\b", re.IGNORECASE)
_SCRIPT_END = re.compile(r"</script\s*>", re.IGNORECASE)
_STYLE_END = re.compile(r"</style\s*>", re.IGNORECASE)
_SPACE = re.compile(r"\s+")

Failure = ApiStatusError | ApiTransportError | ApiProtocolError


class Answered(Protocol):
    """What judging an answer reads of it (an ``httpx.Response`` is one)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


def _as_text(value: object) -> str | None:
    """An envelope field as text: a string, or a number as written. A list or an object
    is no message of its own (``str()`` of one nested 1,000 deep raises RecursionError);
    with no field to show, the error quotes the body's excerpt instead."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return shown(value, _TEXT_CHARS)
    return None


def _strip_tags(text: str) -> str:
    """Tags become spaces; a script or a style goes whole, to the end of the text if
    it never ends (a cut page). Each search starts where the last one ended."""
    kept: list[str] = []
    at = 0
    while (start := _HIDDEN_START.search(text, at)) is not None:
        kept.append(text[at : start.start()])
        end_of = _SCRIPT_END if start[1].lower() == "script" else _STYLE_END
        end = end_of.search(text, start.end())
        at = end.end() if end is not None else len(text)
    kept.append(text[at:])
    return _TAG.sub(" ", " ".join(kept))


class Failures:
    """Builds errors for one client: knows the key to scrub and the timeouts to name."""

    def __init__(self, api_key: Secret, timeout: httpx.Timeout) -> None:
        self._api_key = api_key
        self._timeout = timeout

    def scrub(self, text: str) -> str:
        key = self._api_key.reveal()
        return text.replace(key, "***") if key else text

    def request_id(self, response: Answered) -> str | None:
        value = response.headers.get("x-request-id")
        return self.scrub(value)[:_EXCERPT_CHARS] if value else None

    def excerpt(self, body: bytes) -> str | None:
        # scrubbed before it is cut: a key across the cut would show its first part
        text = self.scrub(body[:ERROR_BODY_BYTES].decode("utf-8", errors="replace"))
        text = _SPACE.sub(" ", _strip_tags(text[:_STRIPPED_CHARS])).strip()
        text = self.scrub(text)
        if not text:
            return None
        return text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 3] + "..."

    def text(self, value: object) -> str | None:
        text = _as_text(value)
        return self.scrub(text)[:_TEXT_CHARS] if text is not None else None

    def response_error(
        self,
        call: ApiCall,
        response: Answered,
        verdict: Verdict,
        body: bytes,
        data: dict[str, Any] | None,
        request_id: str | None,
        *,
        problem: str | None = None,
    ) -> Failure:
        status = response.status_code
        if 200 <= status < 300:
            return ApiProtocolError(
                call,
                status=status,
                detail=problem or "the body is not a JSON object",
                request_id=request_id,
                body_excerpt=self.excerpt(body),
            )
        envelope = data.get("error") if data is not None else None
        if isinstance(envelope, str):
            envelope = {"message": envelope}
        fields: dict[str, str | None] = {}
        if isinstance(envelope, dict):  # Azure may omit type/param: take what is there
            fields = {
                "error_type": self.text(envelope.get("type")),
                "error_code": self.text(envelope.get("code")),
                "error_message": self.text(envelope.get("message")),
            }
        has_fields = any(fields.values())
        return status_error_class(verdict)(
            call,
            status=status,
            verdict=verdict,
            request_id=request_id,
            retry_after=verdict.retry_after,
            body_excerpt=None if has_fields else self.excerpt(body),
            **fields,
        )

    def transport_error(self, call: ApiCall, exc: Exception) -> ApiTransportError:
        timeout: float | None = None
        if isinstance(exc, Aborted):
            aborted = ApiAborted(call)
            aborted.__cause__ = exc
            return aborted
        if isinstance(exc, LimitReached):
            error = ApiTransportError(
                call, kind=TransportFailure.TIMEOUT, detail=str(exc), timeout=exc.seconds
            )
            error.__cause__ = exc
            return error
        if isinstance(exc, httpx.TimeoutException):
            kind = TransportFailure.TIMEOUT
            timeout = {
                httpx.ConnectTimeout: self._timeout.connect,
                httpx.ReadTimeout: self._timeout.read,
                httpx.WriteTimeout: self._timeout.write,
                httpx.PoolTimeout: self._timeout.pool,
            }.get(type(exc))
        elif isinstance(exc, httpx.ConnectError | httpx.ProxyError):
            kind = TransportFailure.CONNECT
        elif isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
            kind = TransportFailure.READ
        else:
            kind = TransportFailure.PROTOCOL
        detail = self.scrub(f"{type(exc).__name__}: {exc}")[:_TEXT_CHARS]
        error = ApiTransportError(call, kind=kind, detail=detail, timeout=timeout)
        error.__cause__ = exc
        return error

"""Errors from talking to the Batch API.

    ApiError (orchestrator.errors)
    ├── ApiStatusError         the server answered with an error status
    │   ├── ApiAuthError       401/403: stop all sending
    │   ├── ApiNotFoundError   404
    │   └── ApiRejectedError   any other status that is not retried
    ├── ApiTransportError      timeout, connect error, dropped connection, cut-off body
    │   ├── ApiAborted         the process is stopping: the call was ended unanswered
    │   └── ApiHeldBack        not sent: the shared request budget holds every process back
    ├── ApiProtocolError       a 2xx whose body cannot be understood
    │   └── ApiAnswerTooLarge  an answer bigger than the cap: not retried in-process
    └── RetryLater             retryable, but not now: persist a next-attempt time

Every message names the call (action, HTTP method, path with the id), the status,
the API error ``type``/``code``/``message`` when the body was a JSON envelope, the
``x-request-id``, or an excerpt of a non-JSON body. The client scrubs the API key
from every text before it reaches these classes; nothing here stores a request or
its headers.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.core.retry_policy import TransportFailure, Verdict, VerdictKind
from orchestrator.errors import ApiError

__all__ = [
    "ApiAborted",
    "ApiAnswerTooLarge",
    "ApiAuthError",
    "ApiCall",
    "ApiHeldBack",
    "ApiNotFoundError",
    "ApiProtocolError",
    "ApiRejectedError",
    "ApiStatusError",
    "ApiTransportError",
    "RetryLater",
    "status_error_class",
]


@dataclass(frozen=True)
class ApiCall:
    """Which call failed: ``action`` is ours (retrieve, cancel...), the rest is HTTP."""

    action: str
    method: str
    path: str

    def __str__(self) -> str:
        return f"{self.action}: {self.method} {self.path}"


def _rid(request_id: str | None) -> str:
    return f"x-request-id={request_id}" if request_id else "no x-request-id"


def _seconds(value: float) -> str:
    return f"{value:g}s"


class ApiStatusError(ApiError):
    """The Batch API answered with an error status."""

    def __init__(
        self,
        call: ApiCall,
        *,
        status: int,
        verdict: Verdict,
        error_type: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        body_excerpt: str | None = None,
    ) -> None:
        self.call = call
        self.action = call.action
        self.method = call.method
        self.path = call.path
        self.status = status
        self.verdict = verdict
        self.error_type = error_type
        self.error_code = error_code
        self.error_message = error_message
        self.request_id = request_id
        self.retry_after = retry_after
        self.body_excerpt = body_excerpt
        # The status code first, then what the server said, then where: tables cut
        # long texts at the end, and the code is what a person reads first.
        lead = verdict.reason
        if not lead.startswith(f"HTTP {status}"):
            lead = f"HTTP {status} ({lead})"
        if error_type or error_code or error_message:
            lead += (
                f": {error_message or '(no message)'} "
                f"(type={error_type or '-'} code={error_code or '-'})"
            )
        elif body_excerpt:
            lead += f": body {body_excerpt!r}"
        parts = [lead, str(call)]
        if retry_after is not None:
            parts.append(f"retry-after {_seconds(retry_after)}")
        parts.append(_rid(request_id))
        super().__init__("; ".join(parts))

    @property
    def retryable(self) -> bool:
        return self.verdict.retryable


class ApiAuthError(ApiStatusError):
    """401/403: the key is wrong, revoked or lacks access. Stop all sending."""


class ApiNotFoundError(ApiStatusError):
    """404: no such batch or file for this key (wrong id, or wrong org/project)."""


class ApiRejectedError(ApiStatusError):
    """The server refused the request and retrying the same request will not help."""


def status_error_class(verdict: Verdict) -> type[ApiStatusError]:
    return {
        VerdictKind.AUTH: ApiAuthError,
        VerdictKind.NOT_FOUND: ApiNotFoundError,
        VerdictKind.REJECTED: ApiRejectedError,
    }.get(verdict.kind, ApiStatusError)


class ApiTransportError(ApiError):
    """No complete response: timeout, connection error, dropped connection, cut-off body.

    Always retryable (by restarting the whole request or download).
    """

    retryable = True

    def __init__(
        self,
        call: ApiCall,
        *,
        kind: TransportFailure,
        detail: str,
        timeout: float | None = None,
        file_id: str | None = None,
        received: int | None = None,
        expected: int | None = None,
    ) -> None:
        self.call = call
        self.action = call.action
        self.method = call.method
        self.path = call.path
        self.kind = kind
        self.detail = detail
        self.timeout = timeout
        self.file_id = file_id
        self.received = received
        self.expected = expected
        what = {
            TransportFailure.TIMEOUT: "timed out",
            TransportFailure.CONNECT: "could not connect",
            TransportFailure.READ: "connection dropped",
            TransportFailure.PROTOCOL: "unreadable response",
        }[kind]
        parts = [what]  # what happened first, where after (as for a status error)
        if timeout is not None:
            parts.append(f"after {_seconds(timeout)}")
        message = " ".join(parts) + f": {detail}"
        if received is not None:
            expected_text = "unknown" if expected is None else f"{expected}"
            message += f" (file {file_id}: received {received} bytes, expected {expected_text})"
        super().__init__(f"{message}; {call}")


class ApiAborted(ApiTransportError):
    """The process is stopping and ended this call before its answer was complete.

    Whether a POST reached the server is unknown: the durable layer tries again later.
    """

    def __init__(self, call: ApiCall, *, file_id: str | None = None) -> None:
        super().__init__(
            call, kind=TransportFailure.READ, detail="the process is stopping", file_id=file_id
        )
        self.args = (f"{call} abandoned: the process is stopping",)


class ApiHeldBack(ApiTransportError):
    """Not sent: the shared request budget (``api_max_requests_per_second``, or a 429
    that some process got) holds every process back for longer than is worth waiting
    in-process. Nothing reached the server; the durable layer tries again later."""

    def __init__(self, call: ApiCall, *, wait: float) -> None:
        super().__init__(
            call, kind=TransportFailure.CONNECT, detail="held back by the shared request budget"
        )
        self.wait = wait
        self.args = (
            f"{call} not sent: the shared request budget holds every process back for "
            f"{_seconds(round(wait, 3))} (api_max_requests_per_second, or a 429's Retry-After)",
        )


class ApiProtocolError(ApiError):
    """The server answered 2xx but the body is not what the API returns (not JSON...)."""

    retryable = True

    def __init__(
        self,
        call: ApiCall,
        *,
        status: int,
        detail: str,
        request_id: str | None = None,
        body_excerpt: str | None = None,
    ) -> None:
        self.call = call
        self.action = call.action
        self.method = call.method
        self.path = call.path
        self.status = status
        self.detail = detail
        self.request_id = request_id
        self.body_excerpt = body_excerpt
        message = f"HTTP {status} but {detail}; {call}"
        if body_excerpt:
            message += f"; body: {body_excerpt!r}"
        super().__init__(f"{message}; {_rid(request_id)}")


class ApiAnswerTooLarge(ApiProtocolError):
    """A JSON answer over ``api_max_answer_bytes``: the same request would get the same
    answer, so it is not retried in-process; the durable backoff asks again later."""

    def __init__(
        self, call: ApiCall, *, status: int, detail: str, cap: int, request_id: str | None = None
    ) -> None:
        super().__init__(call, status=status, detail=detail, request_id=request_id)
        self.cap = cap


class RetryLater(ApiError):
    """Retryable, but not in this process now: persist ``next_attempt_at`` and come back.

    ``delay_s`` is the server's Retry-After (capped by the policy) when it sent one,
    or the wait that was too long to sleep through in-process; None means "use your
    own durable backoff". ``cause`` (also ``__cause__``) is the last failure.
    """

    retryable = True

    def __init__(
        self,
        delay_s: float | None,
        cause: ApiStatusError | ApiTransportError | ApiProtocolError,
        *,
        attempts: int,
        retry_after: float | None = None,
        went_out: bool | None = None,
    ) -> None:
        self.delay_s = delay_s
        self.cause = cause
        self.attempts = attempts
        self.retry_after = retry_after
        self.call = cause.call
        self.action = cause.call.action
        self.method = cause.call.method
        self.path = cause.call.path
        self.status: int | None = getattr(cause, "status", None)
        self.request_id: str | None = getattr(cause, "request_id", None)
        when = f"retry in {_seconds(delay_s)}" if delay_s is not None else "retry with backoff"
        super().__init__(f"{cause}; gave up in-process after {attempts} attempt(s), {when}")
        self.__cause__ = cause
        # Any of the in-process attempts, not only the last: a 503 that went out before
        # a retry the budget held back may have cancelled the batch all the same.
        self._went_out = not isinstance(cause, ApiHeldBack) if went_out is None else went_out

    @property
    def went_out(self) -> bool:
        """Was a request sent by any of its attempts (not all held back by the shared
        budget)? None given: judged by the last one, ``cause``."""
        return self._went_out

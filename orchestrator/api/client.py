"""A small sync client for the Batch API endpoints the orchestrator needs.

- ``retrieve`` / ``cancel`` / ``list_batches`` (+ ``iter_batches``) / ``download`` /
  ``delete_file``.
- One ``httpx.Client``, safe to share between threads, with a connection pool per thread
  (see transport.py).
- Retries in-process with tenacity, following ``RetryPolicy``: a few quick
  attempts, never sleeping through a long wait. When it stops on a retryable
  failure it raises ``RetryLater`` so the durable layer can persist the next
  attempt time.
- Redirects are not followed: the ``api-key`` header would go wherever they point.
- Nothing from the server is trusted to be small or quick: a JSON answer is read up
  to ``max_answer_bytes`` (decoded, see bodies.py) within ``deadline`` seconds; a
  download must keep up ``download_min_bytes_per_second``; ``abort()`` ends every
  call in flight (limits.py).
- The API key never appears in an exception or a log line: every text taken from
  a response is scrubbed of it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import random as _random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import httpx
import orjson
import tenacity

from orchestrator import __version__
from orchestrator.api.bodies import (
    ACCEPT_ENCODING,
    BodyTooLarge,
    CorruptBody,
    Decoder,
    UnsupportedEncoding,
    read_capped,
)
from orchestrator.api.download import Download
from orchestrator.api.errors import (
    ApiAborted,
    ApiAnswerTooLarge,
    ApiCall,
    ApiProtocolError,
    ApiStatusError,
    ApiTransportError,
    RetryLater,
    status_error_class,
)
from orchestrator.api.limits import (
    Aborted,
    CallScope,
    Deadline,
    Interrupter,
    LimitReached,
    MinThroughput,
)
from orchestrator.api.transport import ThreadLocalTransport
from orchestrator.clock import Clock, SystemClock
from orchestrator.core.ids import validate_batch_id, validate_file_id
from orchestrator.core.retry_policy import (
    RetryPolicy,
    TransportFailure,
    Verdict,
    VerdictKind,
    classify,
)
from orchestrator.errors import ConfigError
from orchestrator.secret import Secret

__all__ = ["ApiResult", "ApiSettings", "BatchApiClient", "Download"]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
USER_AGENT = f"orchestrator/{__version__}"
_EXCERPT_CHARS = 200
_TEXT_CHARS = 500
_ERROR_BODY_BYTES = 64 * 1024  # read at most this much of an error response
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")

_Failure = ApiStatusError | ApiTransportError | ApiProtocolError
_T = TypeVar("_T")
_NO_ANSWER = (httpx.TransportError, httpx.DecodingError)
_NOT_RETRIED = VerdictKind.REJECTED  # the verdict of an answer asking again now cannot change
# Ranges (min, max) of the limits on what the server sends; settings.py checks the same.
ANSWER_BYTES_RANGE = (64 * 1024, 1 << 30)
DEADLINE_RANGE = (0.1, 3600.0)


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """How to reach the API. ``azure_api_version`` set means Azure OpenAI mode:
    ``api-key`` header instead of ``Authorization: Bearer``, and ``api-version``
    added to every query. Paths are relative to ``base_url`` in both modes."""

    api_key: Secret
    base_url: str = DEFAULT_BASE_URL
    organization: str | None = None
    project: str | None = None
    azure_api_version: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    deadline: float = 60.0  # a JSON call's whole exchange, per attempt
    max_answer_bytes: int = 8 << 20  # a JSON answer, decoded
    download_min_bytes_per_second: int = 10_000
    download_throughput_window: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.api_key, Secret) or not self.api_key:
            raise ConfigError("api_key: must be a non-empty Secret")
        if _HEADER_SAFE.fullmatch(self.api_key.reveal()) is None:
            # never show it: say only what is wrong
            raise ConfigError("api_key: contains spaces or characters not allowed in a header")
        if not self.base_url.startswith(("https://", "http://")):
            raise ConfigError(
                f"base_url: must start with https:// or http://, got {self.base_url!r}"
            )
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        for name in ("organization", "project", "azure_api_version"):
            value = getattr(self, name)
            if value == "":  # an empty environment variable means "not set"
                object.__setattr__(self, name, None)
            elif value is not None and _HEADER_SAFE.fullmatch(value) is None:
                raise ConfigError(f"{name}: {value!r} has characters not allowed in a header")
        for name in (
            "connect_timeout",
            "read_timeout",
            "deadline",
            "max_answer_bytes",
            "download_min_bytes_per_second",
            "download_throughput_window",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}: must be > 0, got {value!r}")

    @property
    def is_azure(self) -> bool:
        return self.azure_api_version is not None


@dataclass(frozen=True)
class ApiResult:
    """A decoded JSON object from a 2xx response."""

    data: dict[str, Any]
    status: int
    request_id: str | None
    attempts: int


@dataclass
class _Outcome(Generic[_T]):
    """What one attempt produced; tenacity retries on ``verdict``."""

    verdict: Verdict
    attempt: int
    payload: _T | None = None
    error: _Failure | None = None
    planned_wait: float | None = field(default=None, repr=False)


def _is_retry(outcome: _Outcome[Any]) -> bool:
    return outcome.verdict.kind is VerdictKind.RETRY


def _outcome_of(state: tenacity.RetryCallState) -> _Outcome[Any]:
    assert state.outcome is not None
    return cast("_Outcome[Any]", state.outcome.result())


class _StopWhenAborted(tenacity.stop.stop_base):
    def __init__(self, interrupter: Interrupter) -> None:
        self._interrupter = interrupter

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._interrupter.aborted


class _StopWhenWaitTooLong(tenacity.stop.stop_base):
    """Stop instead of sleeping through a wait longer than the in-process limit."""

    def __init__(self, planned_wait: Callable[[tenacity.RetryCallState], float], limit: float):
        self._planned_wait = planned_wait
        self._limit = limit

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._planned_wait(retry_state) > self._limit


def _decode_object(content: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _is_html(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.strip().lower().startswith("text/html")


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


class BatchApiClient:
    """Thread-safe client; one instance per process, shared by the worker pool."""

    def __init__(
        self,
        settings: ApiSettings,
        *,
        policy: RetryPolicy,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Clock | None = None,
        random: Callable[[], float] = _random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._policy = policy
        self._interrupter = Interrupter()
        # the retry loop's sleep ends at once on abort()
        self._sleep = sleep if sleep is not None else self._interrupter.wait
        self._monotonic = monotonic
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._random = random
        self._timeout = httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.read_timeout,
            pool=settings.read_timeout,
        )
        self._http = httpx.Client(
            base_url=settings.base_url,
            headers=self._default_headers(),
            params={"api-version": settings.azure_api_version} if settings.is_azure else None,
            timeout=self._timeout,
            transport=transport if transport is not None else ThreadLocalTransport(),
            follow_redirects=False,
        )

    def _default_headers(self) -> dict[str, str]:
        settings = self._settings
        headers = {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Accept-Encoding": ACCEPT_ENCODING,
        }
        if settings.is_azure:
            headers["api-key"] = settings.api_key.reveal()
        else:
            headers["Authorization"] = f"Bearer {settings.api_key.reveal()}"
        if settings.organization:
            headers["OpenAI-Organization"] = settings.organization
        if settings.project:
            headers["OpenAI-Project"] = settings.project
        return headers

    def __repr__(self) -> str:
        return f"BatchApiClient(base_url={self._settings.base_url!r})"

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def abort(self) -> None:
        """End every call in flight now and refuse new ones (the process is stopping).

        Safe from a signal handler and from any thread. A call it ends raises
        ``ApiAborted``."""
        self._interrupter.abort()

    @property
    def aborted(self) -> bool:
        return self._interrupter.aborted

    def __enter__(self) -> BatchApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- public calls ---------------------------------------------------------

    def retrieve(self, batch_id: str) -> ApiResult:
        batch_id = validate_batch_id(batch_id)
        return self._json_call(ApiCall("retrieve", "GET", f"/batches/{batch_id}"), batch_id)

    def cancel(self, batch_id: str) -> ApiResult:
        batch_id = validate_batch_id(batch_id)
        call = ApiCall("cancel", "POST", f"/batches/{batch_id}/cancel")
        return self._json_call(call, batch_id)

    def delete_file(self, file_id: str) -> ApiResult:
        """``DELETE /files/{id}``. A file already gone raises ``ApiNotFoundError``."""
        file_id = validate_file_id(file_id)
        return self._json_call(ApiCall("delete_file", "DELETE", f"/files/{file_id}"), None)

    def list_batches(self, after: str | None = None, limit: int = 20) -> ApiResult:
        """One page of ``GET /batches`` (newest first, in practice)."""
        if not 1 <= limit <= 100:
            raise ValueError(f"limit must be 1..100, got {limit!r}")
        params: dict[str, str | int] = {"limit": limit}
        if after is not None:
            if not after:
                raise ValueError("after must be a batch id or None, not ''")
            params["after"] = after
        return self._json_call(ApiCall("list", "GET", "/batches"), None, params=params)

    def iter_batches(self, limit: int = 100) -> Iterator[dict[str, Any]]:
        """Every batch, page by page, until ``has_more`` is false or a page is empty."""
        after: str | None = None
        while True:
            page = self.list_batches(after=after, limit=limit)
            data = page.data.get("data")
            if not isinstance(data, list) or not all(isinstance(b, dict) for b in data):
                raise self._page_error(page, "the list has no 'data' array of objects")
            if not data:
                return
            yield from data
            if page.data.get("has_more") is not True:
                return
            last = data[-1].get("id")
            if not isinstance(last, str) or not last or last == after:
                raise self._page_error(page, "the list cursor (last id) did not advance")
            after = last

    @contextlib.contextmanager
    def download(self, file_id: str) -> Iterator[Download]:
        """Open ``GET /files/{id}/content`` as a stream.

        The status is retried per policy; the body is not (a cut-off body raises a
        retryable ``ApiTransportError`` from ``iter_bytes``; restart the download).
        """
        file_id = validate_file_id(file_id)
        call = ApiCall("download", "GET", f"/files/{file_id}/content")
        extra: dict[str, str | None] = {
            "action": call.action,
            "batch_id": None,
            "file_id": file_id,
            "request_id": None,
        }
        scope = CallScope(self._throughput(), self._interrupter)
        with scope.active():
            (response, decoder), attempts = self._execute(
                call, extra, lambda n: self._download_attempt(call, n, extra, scope)
            )
            request_id = self._request_id(response)
            try:
                yield Download(
                    response,
                    call=call,
                    file_id=file_id,
                    attempts=attempts,
                    request_id=request_id,
                    scrub=self._scrub,
                    extra={**extra, "request_id": request_id},
                    scope=scope,
                    decoder=decoder,
                )
            finally:
                response.close()

    def _deadline(self) -> Deadline:
        return Deadline(self._settings.deadline, self._monotonic)

    def _throughput(self) -> MinThroughput:
        settings = self._settings
        return MinThroughput(
            settings.download_min_bytes_per_second,
            settings.download_throughput_window,
            self._monotonic,
        )

    # -- the retry loop ---------------------------------------------------------

    def _planned_wait(self, state: tenacity.RetryCallState) -> float:
        outcome = _outcome_of(state)
        if outcome.planned_wait is None:
            outcome.planned_wait = self._policy.next_wait(
                outcome.verdict, state.attempt_number - 1, self._random()
            )
        return outcome.planned_wait

    def _execute(
        self,
        call: ApiCall,
        extra: dict[str, str | None],
        attempt: Callable[[int], _Outcome[_T]],
    ) -> tuple[_T, int]:
        counter = itertools.count(1)
        policy = self._policy

        def before_sleep(state: tenacity.RetryCallState) -> None:
            outcome = _outcome_of(state)
            logger.info(
                "%s: %s; retry %d/%d in %.3gs",
                call,
                outcome.verdict.reason,
                state.attempt_number,
                policy.max_in_process_attempts - 1,
                self._planned_wait(state),
                extra={**extra, "request_id": getattr(outcome.error, "request_id", None)},
            )

        retrying = tenacity.Retrying(
            sleep=self._sleep,
            retry=tenacity.retry_if_result(_is_retry),
            wait=self._planned_wait,
            stop=tenacity.stop_after_attempt(policy.max_in_process_attempts)
            | _StopWhenWaitTooLong(self._planned_wait, policy.max_in_process_wait)
            | _StopWhenAborted(self._interrupter),
            before_sleep=before_sleep,
            retry_error_callback=_outcome_of,
        )
        outcome = retrying(lambda: attempt(next(counter)))
        if outcome.verdict.kind is VerdictKind.OK and outcome.payload is not None:
            return outcome.payload, outcome.attempt
        assert outcome.error is not None
        if outcome.verdict.kind is VerdictKind.RETRY:
            raise self._retry_later(outcome, outcome.error, extra)
        level = logging.WARNING if outcome.verdict.kind is VerdictKind.AUTH else logging.INFO
        error = outcome.error
        logger.log(level, "%s", error, extra={**extra, "request_id": _rid_of(error)})
        raise error

    def _retry_later(
        self, outcome: _Outcome[Any], error: _Failure, extra: dict[str, str | None]
    ) -> RetryLater:
        policy = self._policy
        retry_after = outcome.verdict.retry_after
        capped = policy.cap_retry_after(retry_after) if retry_after is not None else None
        planned = outcome.planned_wait
        if planned is not None and planned > policy.max_in_process_wait:
            delay: float | None = planned
        else:
            delay = capped
        later = RetryLater(delay, error, attempts=outcome.attempt, retry_after=capped)
        logger.warning("%s", later, extra={**extra, "request_id": _rid_of(error)})
        return later

    # -- one attempt ----------------------------------------------------------------

    def _json_call(
        self, call: ApiCall, batch_id: str | None, *, params: dict[str, str | int] | None = None
    ) -> ApiResult:
        extra: dict[str, str | None] = {
            "action": call.action,
            "batch_id": batch_id,
            "request_id": None,
        }
        scope = CallScope(self._deadline(), self._interrupter)
        with scope.active():
            result, _ = self._execute(
                call, extra, lambda n: self._json_attempt(call, n, extra, params, scope)
            )
        return result

    def _json_attempt(
        self,
        call: ApiCall,
        number: int,
        extra: dict[str, str | None],
        params: dict[str, str | int] | None,
        scope: CallScope,
    ) -> _Outcome[ApiResult]:
        scope.limit = self._deadline()  # each attempt has the whole deadline
        request = self._http.build_request(call.method, call.path, params=params)
        started = time.perf_counter()
        try:
            scope.check()  # aborted while the retry loop slept: send nothing
            response = self._http.send(request, stream=True)
        except (*_NO_ANSWER, LimitReached, Aborted) as exc:
            return self._transport_outcome(call, number, exc, started, extra)
        try:
            request_id = self._log_response(call, response, started, extra)
            content, problem = self._read_answer(response, scope)
        except BodyTooLarge as exc:
            too_large = ApiAnswerTooLarge(
                call,
                status=response.status_code,
                detail=str(exc),
                cap=exc.cap,
                request_id=self._request_id(response),
            )
            return _Outcome(Verdict(_NOT_RETRIED, "answer too large"), number, error=too_large)
        except (*_NO_ANSWER, LimitReached, Aborted) as exc:
            return self._transport_outcome(call, number, exc, started, extra)
        finally:
            response.close()
        data = _decode_object(content) if problem is None else None
        verdict = classify(
            response.status_code, response.headers, self._clock.now(), body_is_json=data is not None
        )
        if verdict.kind is VerdictKind.OK and data is not None:
            result = ApiResult(data, response.status_code, request_id, number)
            return _Outcome(verdict, number, payload=result)
        error = self._response_error(
            call, response, verdict, content, data, request_id, problem=problem
        )
        return _Outcome(verdict, number, error=error)

    def _read_answer(self, response: httpx.Response, scope: CallScope) -> tuple[bytes, str | None]:
        """A 2xx's body up to the cap (``BodyTooLarge`` past it); the start of an error's.

        The second value says why the body could not be decoded, if it could not."""
        ok = 200 <= response.status_code < 300
        cap = self._settings.max_answer_bytes if ok else _ERROR_BODY_BYTES
        try:
            return read_capped(response, scope, cap, truncate=not ok), None
        except (UnsupportedEncoding, CorruptBody) as exc:
            return b"", str(exc)

    def _download_attempt(
        self, call: ApiCall, number: int, extra: dict[str, str | None], scope: CallScope
    ) -> _Outcome[tuple[httpx.Response, Decoder]]:
        scope.limit = self._throughput()
        request = self._http.build_request(
            call.method, call.path, headers={"Accept": "application/binary"}
        )
        started = time.perf_counter()
        try:
            scope.check()
            response = self._http.send(request, stream=True)
        except (*_NO_ANSWER, LimitReached, Aborted) as exc:
            return self._transport_outcome(call, number, exc, started, extra)
        request_id = self._log_response(call, response, started, extra)
        verdict = classify(response.status_code, response.headers, self._clock.now())
        problem: str | None = None
        if verdict.kind is VerdictKind.OK:
            try:
                decoder = Decoder.of(response)
            except UnsupportedEncoding as exc:
                problem = str(exc)
            else:
                if _is_html(response):
                    problem = "the answer is an HTML page (Content-Type text/html), not the file"
                else:
                    return _Outcome(verdict, number, payload=(response, decoder))  # left open
            verdict = Verdict(VerdictKind.RETRY, problem)
        try:
            body, undecodable = self._read_answer(response, scope)
        except (*_NO_ANSWER, LimitReached, Aborted) as exc:
            return self._transport_outcome(call, number, exc, started, extra)
        finally:
            response.close()
        error = self._response_error(
            call,
            response,
            verdict,
            body,
            _decode_object(body),
            request_id,
            problem=problem or undecodable,
        )
        return _Outcome(verdict, number, error=error)

    # -- turning responses and failures into errors ------------------------------------

    def _scrub(self, text: str) -> str:
        key = self._settings.api_key.reveal()
        return text.replace(key, "***") if key else text

    def _request_id(self, response: httpx.Response) -> str | None:
        value = response.headers.get("x-request-id")
        return self._scrub(value)[:_EXCERPT_CHARS] if value else None

    def _log_response(
        self,
        call: ApiCall,
        response: httpx.Response,
        started: float,
        extra: dict[str, str | None],
    ) -> str | None:
        request_id = self._request_id(response)
        logger.debug(
            "%s -> HTTP %d, x-request-id=%s, %.3fs",
            call,
            response.status_code,
            request_id,
            time.perf_counter() - started,
            extra={**extra, "request_id": request_id},
        )
        return request_id

    def _excerpt(self, body: bytes) -> str | None:
        text = self._scrub(body[:_ERROR_BODY_BYTES].decode("utf-8", errors="replace"))
        text = _SPACE.sub(" ", _TAG.sub(" ", text)).strip()
        text = self._scrub(text)
        if not text:
            return None
        return text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 3] + "..."

    def _text(self, value: object) -> str | None:
        text = _as_text(value)
        return self._scrub(text)[:_TEXT_CHARS] if text is not None else None

    def _response_error(
        self,
        call: ApiCall,
        response: httpx.Response,
        verdict: Verdict,
        body: bytes,
        data: dict[str, Any] | None,
        request_id: str | None,
        *,
        problem: str | None = None,
    ) -> _Failure:
        status = response.status_code
        if 200 <= status < 300:
            return ApiProtocolError(
                call,
                status=status,
                detail=problem or "the body is not a JSON object",
                request_id=request_id,
                body_excerpt=self._excerpt(body),
            )
        envelope = data.get("error") if data is not None else None
        if isinstance(envelope, str):
            envelope = {"message": envelope}
        fields: dict[str, str | None] = {}
        if isinstance(envelope, dict):  # Azure may omit type/param: take what is there
            fields = {
                "error_type": self._text(envelope.get("type")),
                "error_code": self._text(envelope.get("code")),
                "error_message": self._text(envelope.get("message")),
            }
        has_fields = any(fields.values())
        return status_error_class(verdict)(
            call,
            status=status,
            verdict=verdict,
            request_id=request_id,
            retry_after=verdict.retry_after,
            body_excerpt=None if has_fields else self._excerpt(body),
            **fields,
        )

    def _transport_outcome(
        self,
        call: ApiCall,
        number: int,
        exc: Exception,
        started: float,
        extra: dict[str, str | None],
    ) -> _Outcome[Any]:
        error = self._transport_error(call, exc)
        if isinstance(error, ApiAborted):
            return _Outcome(Verdict(_NOT_RETRIED, "the process is stopping"), number, error=error)
        logger.debug(
            "%s -> no response after %.3fs: %s",
            call,
            time.perf_counter() - started,
            error.detail,
            extra=extra,
        )
        return _Outcome(classify(error.kind), number, error=error)

    def _transport_error(self, call: ApiCall, exc: Exception) -> ApiTransportError:
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
        detail = self._scrub(f"{type(exc).__name__}: {exc}")[:_TEXT_CHARS]
        error = ApiTransportError(call, kind=kind, detail=detail, timeout=timeout)
        error.__cause__ = exc
        return error

    def _page_error(self, page: ApiResult, detail: str) -> ApiProtocolError:
        return ApiProtocolError(
            ApiCall("list", "GET", "/batches"),
            status=page.status,
            detail=detail,
            request_id=page.request_id,
        )


def _rid_of(error: _Failure) -> str | None:
    return getattr(error, "request_id", None)

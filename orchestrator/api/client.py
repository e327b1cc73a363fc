"""A small sync client for the Batch API endpoints the orchestrator needs.

- ``retrieve`` / ``cancel`` / ``list_batches`` (+ ``iter_batches``) / ``download`` /
  ``delete_file``.
- One ``httpx.Client``, safe to share between threads, with a connection pool per thread
  (see transport.py).
- Retries in-process (retrying.py), following ``RetryPolicy``: a few quick
  attempts, never sleeping through a long wait. When it stops on a retryable
  failure it raises ``RetryLater`` so the durable layer can persist the next
  attempt time.
- With a ``SendBudget`` (processes/request_budget.py), every request sent, retries
  included, first takes a token from the budget all processes share, and a 429 holds
  them all back; a wait too long to sleep through here becomes ``RetryLater``.
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
import logging
import random as _random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from orchestrator import __version__
from orchestrator.api.answers import (
    ApiResult,
    answer_cap,
    decode_object,
    json_outcome,
    log_response,
    too_large,
    transport_outcome,
)
from orchestrator.api.bodies import (
    ACCEPT_ENCODING,
    BodyTooLarge,
    CorruptBody,
    Decoder,
    UnsupportedEncoding,
    read_capped,
)
from orchestrator.api.budget import BudgetGate, SendBudget
from orchestrator.api.download import DOWNLOAD_READ_BYTES, Download
from orchestrator.api.errors import ApiCall, ApiProtocolError
from orchestrator.api.failures import Failures
from orchestrator.api.limits import (
    Aborted,
    CallScope,
    Deadline,
    Interrupter,
    LimitReached,
    MinThroughput,
)
from orchestrator.api.retrying import Outcome, Retrier
from orchestrator.api.settings import ApiSettings
from orchestrator.api.transport import ThreadLocalTransport
from orchestrator.clock import Clock, SystemClock
from orchestrator.core.ids import ID_PATTERN, validate_batch_id, validate_file_id
from orchestrator.core.retry_policy import (
    RetryPolicy,
    Verdict,
    VerdictKind,
    classify,
)

__all__ = ["ApiResult", "ApiSettings", "BatchApiClient", "Download", "ListPage"]

logger = logging.getLogger(__name__)

USER_AGENT = f"orchestrator/{__version__}"
_T = TypeVar("_T")
_LIST = ApiCall("list", "GET", "/batches")


@dataclass(frozen=True)
class ListPage:
    items: list[dict[str, Any]]  # objects, each still to be parsed (one bad item is its own)
    next_after: str | None  # the cursor of the page after it; None: this is the last


_NO_ANSWER = (httpx.TransportError, httpx.DecodingError)


def _is_html(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.strip().lower().startswith("text/html")


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
        budget: SendBudget | None = None,
    ) -> None:
        self._settings = settings
        self._interrupter = Interrupter()
        # by default a wait (between attempts, for the budget) ends at once on abort()
        wait = sleep if sleep is not None else self._interrupter.wait
        self._gate = (
            BudgetGate(budget, policy, wait, self._interrupter) if budget is not None else None
        )
        self._retrier = Retrier(
            policy,
            sleep=wait,
            random=random,
            interrupter=self._interrupter,
        )
        self._monotonic = monotonic
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._timeout = httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.read_timeout,
            pool=settings.read_timeout,
        )
        self._failures = Failures(settings.api_key, self._timeout)
        self._http = httpx.Client(
            base_url=settings.base_url,
            headers=settings.headers(USER_AGENT, ACCEPT_ENCODING),
            params={"api-version": settings.azure_api_version} if settings.is_azure else None,
            timeout=self._timeout,
            transport=transport if transport is not None else ThreadLocalTransport(),
            follow_redirects=False,
        )

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
        return self._json_call(_LIST, None, params=params)

    def list_page(self, after: str | None, limit: int) -> ListPage:
        """One page of ``GET /batches`` after ``after`` (None: the first), checked: a
        ``data`` array of objects and, when there is more, a cursor (the last id) of an
        id's form that moves on. A page that fails a check raises
        ``ApiProtocolError``; nothing of it is used."""
        answer = self.list_batches(after=after, limit=limit)
        data = answer.data.get("data")
        if not isinstance(data, list) or not all(isinstance(b, dict) for b in data):
            raise self._page_error(answer, "the list has no 'data' array of objects")
        if not data or answer.data.get("has_more") is not True:
            return ListPage(data, None)
        last = data[-1].get("id")
        if not isinstance(last, str) or ID_PATTERN.fullmatch(last) is None:
            raise self._page_error(answer, "the list cursor (last id) is not a batch id")
        if last == after:
            raise self._page_error(answer, "the list cursor (last id) did not advance")
        return ListPage(data, last)

    def iter_batches(self, limit: int = 100) -> Iterator[dict[str, Any]]:
        """Every batch, page by page (``list_page``), until the last page."""
        after: str | None = None
        cursors: set[str] = set()  # a cursor that comes back (A, B, A, ...) loops forever
        while True:
            page = self.list_page(after, limit)
            yield from page.items
            if page.next_after is None:
                return
            if page.next_after in cursors:
                raise ApiProtocolError(
                    _LIST, status=200, detail="the list cursor (last id) came back: a loop"
                )
            cursors.add(page.next_after)
            after = page.next_after

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
        scope = CallScope(self._throughput(), self._interrupter, read_bytes=DOWNLOAD_READ_BYTES)
        with scope.active():
            (response, decoder), attempts = self._retrier.run(
                call, extra, lambda n: self._download_attempt(call, n, extra, scope)
            )
            request_id = self._failures.request_id(response)
            try:
                yield Download(
                    response,
                    call=call,
                    file_id=file_id,
                    attempts=attempts,
                    request_id=request_id,
                    scrub=self._failures.scrub,
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
            result, _ = self._retrier.run(
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
    ) -> Outcome[ApiResult]:
        held = self._gate.admit(call, number) if self._gate else None
        if held is not None:  # not sent: the shared budget holds every process back
            return held
        scope.limit = self._deadline()  # each attempt has the whole deadline
        request = self._http.build_request(call.method, call.path, params=params)
        started = time.perf_counter()
        try:
            scope.check()  # aborted while the retry loop slept: send nothing
            response = self._http.send(request, stream=True)
        except (*_NO_ANSWER, LimitReached, Aborted) as exc:
            return self._transport_outcome(call, number, exc, started, extra)
        try:
            request_id = log_response(call, response, started, extra, self._failures)
            answer = self._read_answer(response, scope)
        except BodyTooLarge as exc:
            return too_large(call, number, response, exc, self._failures)
        except (*_NO_ANSWER, LimitReached, Aborted) as exc:
            return self._transport_outcome(call, number, exc, started, extra)
        finally:
            response.close()
        outcome = json_outcome(
            call,
            number,
            response,
            answer,
            request_id,
            failures=self._failures,
            now=self._clock.now(),
        )
        if self._gate is not None:
            self._gate.answered(response.status_code, outcome.verdict)
        return outcome

    def _read_answer(
        self, response: httpx.Response, scope: CallScope, *, excerpt: bool = False
    ) -> tuple[bytes, str | None]:
        """A 2xx's body up to the cap (``BodyTooLarge`` past it); the start of an error's,
        or of any answer read only to be quoted (``excerpt``).

        The second value says why the body could not be decoded, if it could not."""
        cap, truncate = answer_cap(response, self._settings.max_answer_bytes, excerpt=excerpt)
        try:
            return read_capped(response, scope, cap, truncate=truncate), None
        except (UnsupportedEncoding, CorruptBody) as exc:
            return b"", str(exc)

    def _download_attempt(
        self, call: ApiCall, number: int, extra: dict[str, str | None], scope: CallScope
    ) -> Outcome[tuple[httpx.Response, Decoder]]:
        held = self._gate.admit(call, number) if self._gate else None
        if held is not None:  # not sent: the shared budget holds every process back
            return held
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
        request_id = log_response(call, response, started, extra, self._failures)
        verdict = classify(response.status_code, response.headers, self._clock.now())
        if self._gate is not None:
            self._gate.answered(response.status_code, verdict)
        problem: str | None = None
        if verdict.kind is VerdictKind.OK:
            try:
                decoder = Decoder.of(response)
            except UnsupportedEncoding as exc:
                problem = str(exc)
            else:
                if response.status_code != 200:  # a 206 (we ask for no range), 202, 204
                    problem = f"HTTP {response.status_code} is not the whole file (200)"
                elif _is_html(response):
                    problem = "the answer is an HTML page (Content-Type text/html), not the file"
                else:
                    return Outcome(verdict, number, payload=(response, decoder))  # left open
            verdict = Verdict(VerdictKind.RETRY, problem)
        try:
            # A 2xx that is not the file is read as an error's body is, for its excerpt:
            # read whole like a JSON answer, one over api_max_answer_bytes raised
            # BodyTooLarge out of the client.
            body, undecodable = self._read_answer(response, scope, excerpt=True)
        except (*_NO_ANSWER, LimitReached, Aborted) as exc:
            return self._transport_outcome(call, number, exc, started, extra)
        finally:
            response.close()
        error = self._failures.response_error(
            call,
            response,
            verdict,
            body,
            decode_object(body),
            request_id,
            problem=problem or undecodable,
        )
        return Outcome(verdict, number, error=error)

    def _transport_outcome(
        self,
        call: ApiCall,
        number: int,
        exc: Exception,
        started: float,
        extra: dict[str, str | None],
    ) -> Outcome[Any]:
        return transport_outcome(call, number, exc, started, extra, self._failures)

    def _page_error(self, page: ApiResult, detail: str) -> ApiProtocolError:
        return ApiProtocolError(
            _LIST, status=page.status, detail=detail, request_id=page.request_id
        )

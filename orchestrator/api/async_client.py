"""The async client: ``cancel`` and ``retrieve`` for the worker's sender, on asyncio.

Dozens of sends in flight on one event loop cost less CPU than as many threads
(no thread switches, no per-thread pools; see docs/benchmarks.md, "Cancel fan-out").
It keeps every rule of the sync client (client.py), with the pieces they share:

- the same requests (headers, redirects not followed, ids validated), the same
  retries in-process (retrying.py) and the same verdicts (answers.py);
- the same shared request budget (budget.py), asked in a thread;
- the same body cap, read a piece at a time (bodies.py);
- the deadline: each attempt, from connecting to the last byte, runs under
  ``asyncio.timeout(api_deadline)``, so a trickling server cannot hold it longer;
- ``abort()`` (any thread, a signal handler included) cancels every call in flight,
  which then raises ``ApiAborted``, and refuses new ones;
- the API key never appears in an error: texts from the server are scrubbed
  (failures.py).

Connections belong to an event loop: the client keeps one pool per loop and
``aclose()`` closes the running loop's.

On its own pool (``async_transport.LeanTransport``, metered or not) a call goes
without httpx's objects: the request's bytes come from a template made once
(``http11.RequestTemplate``) and the answer is judged from its parsed head
(``answers.HeadAnswer``); the same bytes on the wire, the same caps, verdicts and
errors. A test's transport, or a path the template does not take, goes through
``httpx.Request`` and ``httpx.Response`` as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import random as _random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from orchestrator.api.answers import (
    Answered,
    ApiResult,
    HeadAnswer,
    answer_cap,
    json_outcome,
    log_response,
    too_large,
    transport_outcome,
)
from orchestrator.api.async_transport import (
    AnswerBody,
    Exchanger,
    LeanRequest,
    asyncio_transport,
)
from orchestrator.api.bodies import (
    ACCEPT_ENCODING,
    BodyTooLarge,
    CorruptBody,
    UnsupportedEncoding,
    declared_length,
    read_capped_async,
    read_pieces_capped,
)
from orchestrator.api.budget import BudgetGate, SendBudget
from orchestrator.api.client import USER_AGENT
from orchestrator.api.errors import ApiCall
from orchestrator.api.failures import Failures
from orchestrator.api.http11 import RequestTemplate
from orchestrator.api.limits import Aborted, Deadline, Interrupter
from orchestrator.api.retrying import Outcome, Retrier
from orchestrator.api.settings import ApiSettings
from orchestrator.clock import Clock, SystemClock
from orchestrator.core.ids import validate_batch_id
from orchestrator.core.retry_policy import RetryPolicy

__all__ = ["AsyncBatchApiClient"]

_NO_ANSWER = (httpx.TransportError, httpx.DecodingError)
_STOPPING = "the process is stopping"


class AsyncBatchApiClient:
    """One per process; its calls run on one event loop at a time (the sender's)."""

    def __init__(
        self,
        settings: ApiSettings,
        *,
        policy: RetryPolicy,
        max_connections: int = 32,
        transport: httpx.AsyncBaseTransport | None = None,
        wrap: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Clock | None = None,
        random: Callable[[], float] = _random.random,
        budget: SendBudget | None = None,
    ) -> None:
        self._settings = settings
        self._interrupter = Interrupter()
        self._sleep = sleep if sleep is not None else asyncio.sleep
        self._gate = (
            BudgetGate(budget, policy, self._interrupter.wait, self._interrupter)
            if budget is not None
            else None
        )
        # The sync sleep is never used: run_async sleeps with ``self._sleep``.
        self._retrier = Retrier(
            policy, sleep=self._interrupter.wait, random=random, interrupter=self._interrupter
        )
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._timeout = httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.read_timeout,
            pool=settings.read_timeout,
        )
        self._failures = Failures(settings.api_key, self._timeout)
        self._transport = transport  # a test's; else a pool per event loop
        self._wrap = wrap  # around each pool (the metrics' counting)
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        # For every pool, made on the first https connection (building one: 20-60 ms of
        # CPU, which a plain-http base URL, e.g. a simulator or a proxy, never needs).
        self._tls: ssl.SSLContext | None = None
        self._pools: dict[asyncio.AbstractEventLoop, httpx.AsyncBaseTransport] = {}
        self._lean: dict[asyncio.AbstractEventLoop, Exchanger | None] = {}  # pools that take bytes
        self._base_url = settings.base_url.rstrip("/")
        self._params = {"api-version": settings.azure_api_version} if settings.is_azure else None
        self._headers = httpx.Headers(
            {
                **settings.headers(USER_AGENT, ACCEPT_ENCODING),
                "Connection": "keep-alive",
            }
        )
        self._extensions = {"timeout": self._timeout.as_dict()}
        self._templates = {
            method: RequestTemplate(
                method, self._base_url, params=self._params, headers=self._headers
            )
            for method in ("GET", "POST")
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._calls: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"AsyncBatchApiClient(base_url={self._settings.base_url!r})"

    # -- lifecycle ------------------------------------------------------------

    def abort(self) -> None:
        """End every call in flight now and refuse new ones (the process is stopping).

        Safe from a signal handler and from any thread."""
        self._interrupter.abort()
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing in flight
                loop.call_soon_threadsafe(self._cancel_calls)

    @property
    def aborted(self) -> bool:
        return self._interrupter.aborted

    async def aclose(self) -> None:
        """Close the connections of the running event loop."""
        loop = asyncio.get_running_loop()
        pool = self._pools.pop(loop, None)
        self._lean.pop(loop, None)
        if pool is not None:
            await pool.aclose()

    def _cancel_calls(self) -> None:
        for task in list(self._calls):
            task.cancel()

    def _http(self) -> tuple[httpx.AsyncBaseTransport, Exchanger | None]:
        """This event loop's connections (made on its first call), and the same pool
        again if it takes a request as bytes (``exchange``)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._transport
            if pool is None:
                pool = asyncio_transport(self._tls_context, self._limits)
                if self._wrap is not None:
                    pool = self._wrap(pool)
            self._pools[loop] = pool
            self._lean[loop] = pool if isinstance(pool, Exchanger) and pool.exchanges else None
        return pool, self._lean[loop]

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        return self._tls

    def _lean_request(self, call: ApiCall, deadline: float) -> LeanRequest | None:
        """The call's request as wire bytes, if its path is plain (else None); no wait
        of its exchange lasts past ``deadline`` (the loop's clock)."""
        template = self._templates.get(call.method)
        data = template.fill(call.path) if template is not None else None
        if template is None or data is None:
            return None
        timeout = self._timeout
        return LeanRequest(
            call.method,
            call.path,
            data,
            template.origin,
            connect=timeout.connect,
            read=timeout.read,
            pool=timeout.pool,
            deadline=deadline,
        )

    def _request(self, call: ApiCall) -> httpx.Request:
        """The request as httpx.AsyncClient would build it, less what we never use
        (cookies, auth flows, redirects: an answer is taken as it comes)."""
        return httpx.Request(
            call.method,
            self._base_url + call.path,
            params=self._params,
            headers=self._headers,
            extensions=self._extensions,
        )

    # -- public calls ---------------------------------------------------------

    async def retrieve(self, batch_id: str) -> ApiResult:
        batch_id = validate_batch_id(batch_id)
        return await self._json_call(ApiCall("retrieve", "GET", f"/batches/{batch_id}"), batch_id)

    async def cancel(
        self, batch_id: str, *, may_retry: Callable[[], bool] | None = None
    ) -> ApiResult:
        """``POST /batches/{id}/cancel``. ``may_retry``: asked before each in-process retry;
        False ends the call as if the retries had run out (``Retrier.run_async``)."""
        batch_id = validate_batch_id(batch_id)
        call = ApiCall("cancel", "POST", f"/batches/{batch_id}/cancel")
        return await self._json_call(call, batch_id, may_retry)

    # -- one call, its attempts -------------------------------------------------

    async def _json_call(
        self, call: ApiCall, batch_id: str, may_retry: Callable[[], bool] | None = None
    ) -> ApiResult:
        extra: dict[str, str | None] = {
            "action": call.action,
            "batch_id": batch_id,
            "request_id": None,
        }
        http, lean = self._http()
        task = asyncio.current_task()
        assert task is not None
        self._calls.add(task)
        try:
            if self._interrupter.aborted:
                raise Aborted(_STOPPING)
            result, _ = await self._retrier.run_async(
                call,
                extra,
                lambda n: self._attempt(http, lean, call, n, extra),
                self._sleep,
                may_retry=may_retry,
            )
            return result
        except (asyncio.CancelledError, Aborted) as exc:
            if not self._interrupter.aborted:
                raise  # cancelled by its caller, not by abort(): not ours to turn into an error
            if isinstance(exc, asyncio.CancelledError):
                task.uncancel()
            raise self._failures.transport_error(call, Aborted(_STOPPING)) from None
        finally:
            self._calls.discard(task)

    async def _attempt(
        self,
        http: httpx.AsyncBaseTransport,
        lean: Exchanger | None,
        call: ApiCall,
        number: int,
        extra: dict[str, str | None],
    ) -> Outcome[ApiResult]:
        if self._gate is not None:
            held = await self._gate.admit_async(call, number, self._sleep)
            if held is not None:  # not sent: the shared budget holds every process back
                return held
        if self._interrupter.aborted:
            raise Aborted(_STOPPING)
        started = time.perf_counter()
        request = None
        if lean is not None:  # its waits keep the deadline: no asyncio.timeout around them
            deadline = asyncio.get_running_loop().time() + self._settings.deadline
            request = self._lean_request(call, deadline)
        answered: Answered | None = None
        try:
            if lean is not None and request is not None:
                head, body = await lean.exchange(request)
                answered = HeadAnswer(head)
                request_id, answer = await self._read_lean(call, answered, body, started, extra)
            else:
                async with asyncio.timeout(self._settings.deadline):  # each attempt, all of it
                    response = await http.handle_async_request(self._request(call))
                    answered = response
                    try:
                        request_id = log_response(call, response, started, extra, self._failures)
                        answer = await self._read_answer(response)
                    finally:
                        await response.aclose()
        except BodyTooLarge as exc:
            assert answered is not None
            return too_large(call, number, answered, exc, self._failures)
        except TimeoutError:
            reached = Deadline(self._settings.deadline, time.monotonic).reached()
            return transport_outcome(call, number, reached, started, extra, self._failures)
        except _NO_ANSWER as exc:
            return transport_outcome(call, number, exc, started, extra, self._failures)
        outcome = json_outcome(
            call,
            number,
            answered,
            answer,
            request_id,
            failures=self._failures,
            now=self._clock.now(),
        )
        if self._gate is not None:
            await self._gate.answered_async(answered.status_code, outcome.verdict)
        return outcome

    async def _read_lean(
        self,
        call: ApiCall,
        answered: HeadAnswer,
        body: AnswerBody,
        started: float,
        extra: dict[str, str | None],
    ) -> tuple[str | None, tuple[bytes, str | None]]:
        """``_read_answer`` for the lean exchange; the connection given back after."""
        try:
            request_id = log_response(call, answered, started, extra, self._failures)
            cap, truncate = answer_cap(answered, self._settings.max_answer_bytes)
            headers = answered.headers
            try:
                content = await read_pieces_capped(
                    body,
                    headers.get("content-encoding"),
                    declared_length(headers),
                    cap,
                    truncate=truncate,
                )
            except (UnsupportedEncoding, CorruptBody) as exc:
                return request_id, (b"", str(exc))
            return request_id, (content, None)
        finally:
            await body.aclose()

    async def _read_answer(self, response: httpx.Response) -> tuple[bytes, str | None]:
        """A 2xx's body up to the cap (``BodyTooLarge`` past it); the start of an error's."""
        cap, truncate = answer_cap(response, self._settings.max_answer_bytes)
        try:
            return await read_capped_async(response, cap, truncate=truncate), None
        except (UnsupportedEncoding, CorruptBody) as exc:
            return b"", str(exc)

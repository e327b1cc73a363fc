"""The async client's lean exchange (request bytes from a template, the answer judged
from its head) on loopback: the same bytes on the wire and the same results and
errors as its httpx path, against a raw socket and against the simulator."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from orchestrator.api import ApiNotFoundError, RetryLater
from orchestrator.api.async_client import AsyncBatchApiClient
from orchestrator.api.client import ApiSettings
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.metrics import Metrics
from orchestrator.secret import Secret
from orchestrator.simulator import (
    DEFAULT_API_KEY,
    FaultRule,
    Simulator,
    SimulatorConfig,
    SimulatorServer,
)

pytestmark = pytest.mark.timeout(60)
BATCH = orjson.dumps({"id": "batch_abc", "object": "batch", "status": "cancelling"})


class HttpxOnly(httpx.AsyncBaseTransport):
    """A wrap that hides the pool's ``exchange``: the client takes its httpx path."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


Wrap = Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None


def heads_sent(wrap: Wrap, **settings: Any) -> list[bytes]:
    """The request heads a cancel and a retrieve put on the wire, one connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    heads: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while len(heads) < 2:
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                head, _, data = data.partition(b"\r\n\r\n")
                heads.append(head)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(BATCH), BATCH)
                )

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    api = AsyncBatchApiClient(
        ApiSettings(
            api_key=Secret("sk-wire-0123"), base_url=f"http://127.0.0.1:{port}/v1", **settings
        ),
        policy=RetryPolicy(max_in_process_attempts=1),
        wrap=wrap,
    )

    async def calls() -> None:
        try:
            assert (await api.cancel("batch_abc")).data["id"] == "batch_abc"
            assert (await api.retrieve("batch_abc")).data["id"] == "batch_abc"
        finally:
            await api.aclose()

    try:
        asyncio.run(calls())
        server.join(5)
    finally:
        listener.close()
    return [h.replace(b"127.0.0.1:%d" % port, b"HOST") for h in heads]  # two runs, two ports


@pytest.mark.parametrize(
    "settings",
    [{}, {"organization": "org-1", "project": "proj_1"}, {"azure_api_version": "2024-10-21"}],
)
def test_the_lean_request_is_byte_for_byte_httpxs(settings: dict[str, Any]) -> None:
    lean = heads_sent(None, **settings)
    assert lean == heads_sent(HttpxOnly, **settings)
    assert (
        lean[0].startswith(b"POST /v1/batches/batch_abc/cancel") and b"Content-Length: 0" in lean[0]
    )


def test_a_plain_http_base_url_never_builds_a_tls_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Building one (the CA bundle) costs 20-60 ms of CPU: only an https origin pays."""
    built: list[str] = []

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append("tls")
        return real(*args, **kwargs)

    real = httpx.create_ssl_context
    monkeypatch.setattr(httpx, "create_ssl_context", counted)
    heads_sent(None)
    assert built == []


def outcomes(wrap: Wrap, faults: list[FaultRule]) -> tuple[list[str], dict[str, float]]:
    """What four calls gave against the simulator with ``faults``, and the metrics."""
    sim = Simulator(SimulatorConfig(seed=7))
    batch_id = sim.create_batch(3, age_s=30)
    sim.add_faults(faults)
    metrics = Metrics()
    got: list[str] = []
    with SimulatorServer(sim) as server:
        api = AsyncBatchApiClient(
            ApiSettings(api_key=Secret(DEFAULT_API_KEY), base_url=server.url),
            policy=RetryPolicy(initial_delay=0.001, max_delay=0.002, max_in_process_attempts=2),
            wrap=lambda pool: metrics.metered(wrap(pool) if wrap is not None else pool),
        )

        async def calls() -> None:
            for call in (api.cancel, api.retrieve, api.cancel, api.retrieve):
                try:
                    result = await call(batch_id)
                    got.append(f"{result.status} {result.data['status']} {result.attempts}")
                except RetryLater as exc:
                    got.append(f"RetryLater {exc.status} {exc.attempts} {exc.delay_s}")
                except ApiNotFoundError as exc:
                    got.append(f"ApiNotFoundError {exc.status}")
            try:
                await api.retrieve("batch_missing")
            except ApiNotFoundError as exc:
                got.append(f"{type(exc).__name__} {exc.status}")
            await api.aclose()

        asyncio.run(calls())
    counted = {
        f"{sample.labels['endpoint']} {sample.labels['code']}": sample.value
        for family in metrics.registry.collect()
        if family.name == "orchestrator_api_requests"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    return got, counted


def test_answers_are_judged_and_counted_as_on_the_httpx_path() -> None:
    faults = [
        FaultRule(kind="status", endpoint="cancel", status=500, times=1),
        FaultRule(kind="status", endpoint="retrieve", status=429, retry_after="30", times=2),
    ]
    lean = outcomes(None, faults)
    assert lean == outcomes(HttpxOnly, faults)
    got, counted = lean
    assert got[0] == "200 cancelling 2"  # a 500, then the retry
    assert got[1].startswith("RetryLater 429")  # Retry-After 30 s: not slept through
    assert got[-1] == "ApiNotFoundError 404"
    assert counted["cancel 500"] == 1 and counted["retrieve 429"] >= 1

"""Prometheus metrics: scraped over HTTP from a per-process registry."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.api.limits import Aborted, LimitReached
from orchestrator.cli.wiring import build_async_client, build_client
from orchestrator.cli.worker_args import add_metrics_port_argument
from orchestrator.db.database import Database
from orchestrator.errors import ConfigError
from orchestrator.metrics import (
    AsyncMeteredTransport,
    MeteredTransport,
    Metrics,
    MetricsServer,
    endpoint_of,
    serve_metrics,
    start_process_metrics,
)
from orchestrator.secret import Secret
from orchestrator.settings import Settings
from orchestrator.simulator import (
    DEFAULT_API_KEY,
    FaultRule,
    Simulator,
    SimulatorConfig,
    SimulatorServer,
)

from . import fleet as f

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
Serve = Callable[[Metrics], MetricsServer]
ANY_DATABASE = "sqlite:///unused.sqlite3"  # settings need one; these tests do not open it


def scrape(server: MetricsServer) -> Samples:
    response = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


@pytest.fixture
def serve() -> Iterator[Serve]:
    started: list[MetricsServer] = []

    def start(metrics: Metrics) -> MetricsServer:
        settings = Settings(database_url=ANY_DATABASE, metrics_port=0, metrics_address="127.0.0.1")
        server = serve_metrics(settings, metrics.registry)
        assert server is not None
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def test_the_fleet_is_read_from_the_database_on_each_scrape(fleet: Database, serve: Serve) -> None:
    server = serve(Metrics.for_database(fleet))
    samples = scrape(server)
    assert samples[("orchestrator_database_up", ())] == 1
    assert samples[("orchestrator_batches", (("status", "cancelling"),))] == 1
    assert samples[("orchestrator_batches", (("status", "unobserved"),))] == 1
    assert samples[("orchestrator_batches_overdue", ())] == 1
    assert samples[("orchestrator_cancel_requests", (("state", "pending"),))] == 1
    assert samples[("orchestrator_cancel_requests", (("state", "closed"),))] == 2
    assert samples[("orchestrator_results_stored", ())] == 9
    assert samples[("orchestrator_result_line_errors", ())] == 1
    assert samples[("orchestrator_result_bytes", ())] == 3 * 400 + 5 * 400 + 1 * 400
    assert samples[("orchestrator_sending_paused", ())] == 1

    f.set_columns(fleet, f.SLOW_CANCEL, overdue_since=None)
    assert scrape(server)[("orchestrator_batches_overdue", ())] == 0


def test_a_database_that_cannot_answer_still_gives_a_scrape(tmp_path: Path, serve: Serve) -> None:
    unmigrated = Database.connect(f"sqlite:///{tmp_path / 'empty.sqlite3'}", check_schema=False)
    try:
        samples = scrape(serve(Metrics.for_database(unmigrated)))
    finally:
        unmigrated.dispose()
    assert samples[("orchestrator_database_up", ())] == 0
    assert not any(name == "orchestrator_batches" for name, _ in samples)


def test_api_requests_and_retries_are_counted_below_the_client(serve: Serve) -> None:
    sim = Simulator(SimulatorConfig(seed=5))
    batch_id = sim.create_batch(3, age_s=30)
    sim.add_fault(FaultRule(kind="status", endpoint="retrieve", status=500, times=1))
    metrics = Metrics()
    with SimulatorServer(sim) as api:
        settings = Settings(
            database_url=ANY_DATABASE,
            api_key=Secret(DEFAULT_API_KEY),
            base_url=api.url,
            retry_initial_delay=0.001,
            retry_max_delay=0.002,
        )
        with build_client(settings, transport=metrics.transport()) as client:
            client.retrieve(batch_id)
            client.list_batches(limit=1)
            client.cancel(batch_id)
    samples = scrape(serve(metrics))
    requests = {
        dict(labels)["endpoint"] + " " + dict(labels)["code"]: value
        for (name, labels), value in samples.items()
        if name == "orchestrator_api_requests_total"
    }
    assert requests == {"retrieve 500": 1, "retrieve 200": 1, "list 200": 1, "cancel 200": 1}
    assert samples[("orchestrator_api_retries_total", (("endpoint", "retrieve"),))] == 1
    assert (
        samples[("orchestrator_api_request_duration_seconds_count", (("endpoint", "cancel"),))] == 1
    )


def test_the_workers_async_requests_and_retries_are_counted_too(serve: Serve) -> None:
    sim = Simulator(SimulatorConfig(seed=5))
    batch_id = sim.create_batch(3, age_s=30)
    sim.add_fault(FaultRule(kind="status", endpoint="cancel", status=500, times=1))
    metrics = Metrics()
    with SimulatorServer(sim) as api:
        settings = Settings(
            database_url=ANY_DATABASE,
            api_key=Secret(DEFAULT_API_KEY),
            base_url=api.url,
            retry_initial_delay=0.001,
            retry_max_delay=0.002,
        )
        client = build_async_client(settings, wrap=metrics.metered)

        async def calls() -> None:
            await client.cancel(batch_id)  # a 500, then the retry
            await client.retrieve(batch_id)
            await client.aclose()

        asyncio.run(calls())
    samples = scrape(serve(metrics))
    requests = {
        dict(labels)["endpoint"] + " " + dict(labels)["code"]: value
        for (name, labels), value in samples.items()
        if name == "orchestrator_api_requests_total"
    }
    assert requests == {"cancel 500": 1, "cancel 200": 1, "retrieve 200": 1}
    assert samples[("orchestrator_api_retries_total", (("endpoint", "cancel"),))] == 1


def requests_counted(metrics: Metrics) -> dict[str, float]:
    return {
        sample.labels["endpoint"] + " " + sample.labels["code"]: sample.value
        for family in metrics.registry.collect()
        if family.name == "orchestrator_api_requests"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def retries_counted(metrics: Metrics) -> float:
    return sum(
        sample.value
        for family in metrics.registry.collect()
        if family.name == "orchestrator_api_retries"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


class Failing(httpx.BaseTransport):
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise self.exc


class FailingAsync(httpx.AsyncBaseTransport):
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise self.exc


RETRIEVE = httpx.Request("GET", "http://api/v1/batches/batch_1")


@pytest.mark.parametrize(
    "exc",
    [
        LimitReached("no complete answer within the call's deadline of 0.5s", 0.5),
        Aborted("the process is stopping"),
        httpx.ReadTimeout("read timed out"),
    ],
    ids=["deadline", "aborted", "transport"],
)
def test_a_sync_request_cut_at_its_deadline_or_aborted_is_counted(exc: Exception) -> None:
    """A trickling server cut at api_deadline is exactly what the documented alert on
    transport_error is for: it was counted nowhere, nor was its retry."""
    metrics = Metrics()
    transport = MeteredTransport(Failing(exc), metrics)
    for _ in range(2):
        with pytest.raises(type(exc)) as info:
            transport.handle_request(RETRIEVE)
        assert info.value is exc  # passed on as it was
    assert requests_counted(metrics) == {"retrieve transport_error": 2}
    assert retries_counted(metrics) == 1


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError(),  # the lean exchange's own deadline
        asyncio.CancelledError(),  # asyncio.timeout's, or the call's task cancelled
        Aborted("the process is stopping"),
        httpx.ReadTimeout("read timed out"),
    ],
    ids=["deadline", "cancelled", "aborted", "transport"],
)
def test_an_async_request_cut_at_its_deadline_or_cancelled_is_counted(
    exc: BaseException,
) -> None:
    metrics = Metrics()
    transport = AsyncMeteredTransport(FailingAsync(exc), metrics)

    async def twice() -> None:
        for _ in range(2):
            with pytest.raises(type(exc)) as info:
                await transport.handle_async_request(RETRIEVE)
            assert info.value is exc

    asyncio.run(twice())
    assert requests_counted(metrics) == {"retrieve transport_error": 2}
    assert retries_counted(metrics) == 1


@pytest.mark.parametrize(
    ("method", "path", "endpoint"),
    [
        ("GET", "/v1/batches/batch_1", "retrieve"),
        ("POST", "/v1/batches/batch_1/cancel", "cancel"),
        ("GET", "/v1/batches", "list"),
        ("POST", "/openai/batches", "create"),
        ("GET", "/v1/files/file-1/content", "download"),
        ("DELETE", "/v1/files/file-1", "delete_file"),
        ("GET", "/v1/files/file-1", "retrieve_file"),
        ("GET", "/v1/models", "other"),
    ],
)
def test_the_endpoint_label_never_holds_an_id(method: str, path: str, endpoint: str) -> None:
    assert endpoint_of(httpx.Request(method, f"http://api{path}")) == endpoint


def test_nothing_is_served_without_a_port() -> None:
    assert serve_metrics(Settings(database_url=ANY_DATABASE), Metrics().registry) is None


def test_the_port_and_address_flags_set_the_settings() -> None:
    parser = argparse.ArgumentParser()
    add_metrics_port_argument(parser)
    args = parser.parse_args(["--metrics-port", "9464", "--metrics-address", "127.0.0.1"])
    assert (args.setting_metrics_port, args.setting_metrics_address) == (9464, "127.0.0.1")


def test_an_address_this_host_does_not_have_is_a_config_error_naming_it() -> None:
    foreign = Settings(database_url=ANY_DATABASE, metrics_port=0, metrics_address="192.0.2.1")
    with pytest.raises(ConfigError, match=r"cannot serve metrics on 192\.0\.2\.1:0"):
        serve_metrics(foreign, Metrics().registry)


def test_a_port_past_65535_is_refused_with_the_settings() -> None:
    with pytest.raises(ConfigError, match="ORCHESTRATOR_METRICS_PORT must be a TCP port"):
        Settings(database_url=ANY_DATABASE, metrics_port=70000)


def test_a_port_in_use_is_a_config_error_naming_it() -> None:
    first = serve_metrics(
        Settings(database_url=ANY_DATABASE, metrics_port=0, metrics_address="127.0.0.1"),
        Metrics().registry,
    )
    assert first is not None
    try:
        taken = Settings(
            database_url=ANY_DATABASE, metrics_port=first.port, metrics_address="127.0.0.1"
        )
        with pytest.raises(ConfigError, match=rf"cannot serve metrics on 127.0.0.1:{first.port}"):
            serve_metrics(taken, Metrics().registry)
    finally:
        first.close()


def test_a_process_serves_its_counters_and_the_fleet_together(fleet: Database, db_url: str) -> None:
    """What `worker` and `reconcile` do: start_process_metrics, then build_client on its
    transport."""
    sim = Simulator(SimulatorConfig(seed=9))
    with SimulatorServer(sim) as api:
        settings = Settings(
            database_url=db_url,
            api_key=Secret(DEFAULT_API_KEY),
            base_url=api.url,
            metrics_port=0,
            metrics_address="127.0.0.1",
        )
        metrics, server = start_process_metrics(settings, fleet)
        assert server is not None
        try:
            with build_client(settings, transport=metrics.transport()) as client:
                client.list_batches(limit=1)
            samples = scrape(server)
        finally:
            server.close()
    assert samples[("orchestrator_api_requests_total", (("code", "200"), ("endpoint", "list")))]
    assert samples[("orchestrator_batches", (("status", "expired"),))] == 1

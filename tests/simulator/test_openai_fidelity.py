"""The official client must talk to the simulator and parse every answer into its own types."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import openai
import orjson
import pytest
from openai.types import Batch, FileDeleted, FileObject

from orchestrator.api.client import ApiSettings, BatchApiClient
from orchestrator.clock import ManualClock
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.secret import Secret
from orchestrator.simulator import FaultRule, Simulator, SimulatorConfig, SimulatorServer

from .conftest import KEY


@pytest.fixture
def client(server: SimulatorServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0) as official:
        yield official


def input_jsonl(count: int) -> bytes:
    rows = [
        {
            "custom_id": f"item-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        }
        for i in range(count)
    ]
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


def strict(batch: Batch) -> Batch:
    """Re-validate the raw JSON with pydantic (the client itself constructs leniently)."""
    return Batch.model_validate(batch.model_dump(mode="json", exclude_unset=False))


def test_full_flow_with_the_official_client(
    client: openai.OpenAI, sim: Simulator, clock: ManualClock
) -> None:
    uploaded = client.files.create(
        file=("requests.jsonl", io.BytesIO(input_jsonl(12))), purpose="batch"
    )
    assert isinstance(uploaded, FileObject)
    assert uploaded.purpose == "batch" and uploaded.bytes == len(input_jsonl(12))
    assert uploaded.id.startswith("file-")

    created = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "fidelity", "sim_scenario": json.dumps({"failed_request_ratio": 0.25})},
    )
    assert isinstance(created, Batch)
    assert created.status == "validating"
    assert created.metadata == {"run": "fidelity", "sim_scenario": '{"failed_request_ratio": 0.25}'}
    assert created.request_counts is not None and created.request_counts.total == 0

    clock.advance(32)  # 30 s into a 60 s run
    running = client.batches.retrieve(created.id)
    assert running.status == "in_progress"
    assert isinstance(running.in_progress_at, int)
    assert running.request_counts is not None and running.request_counts.total == 12

    cancelling = client.batches.cancel(created.id)
    assert cancelling.status == "cancelling"
    assert isinstance(cancelling.cancelling_at, int)
    assert cancelling.output_file_id is None and cancelling.error_file_id is None

    clock.advance(10)
    done = strict(client.batches.retrieve(created.id))
    assert done.status == "cancelled"
    assert isinstance(done.cancelled_at, int)
    assert done.output_file_id and done.error_file_id

    output = client.files.content(done.output_file_id)
    out_lines = [json.loads(line) for line in output.text.splitlines()]
    with client.files.with_streaming_response.content(done.error_file_id) as response:
        err_bytes = b"".join(response.iter_bytes())
        assert int(response.headers["content-length"]) == len(err_bytes)
    err_lines = [json.loads(line) for line in err_bytes.splitlines()]
    custom_ids = sorted(line["custom_id"] for line in out_lines + err_lines)
    assert custom_ids == sorted(f"item-{i}" for i in range(12))
    assert {line["error"]["code"] for line in err_lines if line["error"]} == {"batch_cancelled"}
    truth = sim.truth(created.id)
    assert {cid for cid, kind in truth.items() if kind == "output"} == {
        line["custom_id"] for line in out_lines
    }

    info = client.files.retrieve(done.output_file_id)
    assert info.purpose == "batch_output" and info.bytes == len(output.content)

    deleted = client.files.delete(done.output_file_id)
    assert isinstance(deleted, FileDeleted)
    assert deleted.id == done.output_file_id and deleted.deleted is True
    with pytest.raises(openai.NotFoundError):  # gone for good: content and a second delete
        client.files.content(done.output_file_id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(done.output_file_id)


def test_list_pagination_with_the_official_client(
    client: openai.OpenAI, sim: Simulator, clock: ManualClock
) -> None:
    created = []
    for _ in range(5):
        created.append(sim.create_batch(3))
        clock.advance(1)
    listed = [batch.id for batch in client.batches.list(limit=2)]
    assert listed == list(reversed(created))
    first = client.batches.list(limit=2)
    pages = list(first.iter_pages())
    assert [len(page.data) for page in pages] == [2, 2, 1]
    assert all(isinstance(batch, Batch) for page in pages for batch in page.data)
    for page in pages:
        for batch in page.data:
            strict(batch)


def test_errors_map_to_the_client_exceptions(
    client: openai.OpenAI, server: SimulatorServer, sim: Simulator, clock: ManualClock
) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.batches.retrieve("batch_missing")
    assert missing.value.request_id is not None and missing.value.request_id.startswith("req_")
    assert missing.value.body == {
        "message": "No batch found with id 'batch_missing'.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }

    batch_id = sim.create_batch(2)
    clock.advance(1000)
    with pytest.raises(openai.BadRequestError) as rejected:
        client.batches.cancel(batch_id)
    assert rejected.value.message.endswith("Cannot cancel a batch with status 'completed'.")

    sim.add_fault(FaultRule(kind="status", status=429, retry_after="2"))
    with pytest.raises(openai.RateLimitError) as limited:
        client.batches.retrieve(batch_id)
    assert limited.value.response.headers["retry-after"] == "2"

    with (
        openai.OpenAI(base_url=server.url, api_key="sk-wrong", max_retries=0) as wrong,
        pytest.raises(openai.AuthenticationError) as denied,
    ):
        wrong.batches.retrieve(batch_id)
    assert denied.value.code == "invalid_api_key"


def test_client_retries_honour_retry_after_ms(server: SimulatorServer, sim: Simulator) -> None:
    batch_id = sim.create_batch(2)
    sim.add_fault(FaultRule(kind="status", status=503, retry_after_ms="5", endpoint="retrieve"))
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=1) as retrying:
        assert retrying.batches.retrieve(batch_id).id == batch_id
    assert sim.served("retrieve", batch_id) == 2


def test_azure_client_can_retrieve_and_cancel(
    server: SimulatorServer, sim: Simulator, clock: ManualClock
) -> None:
    batch_id = sim.create_batch(4, endpoint="/chat/completions")
    clock.advance(5)
    with openai.AzureOpenAI(
        azure_endpoint=server.root_url, api_key=KEY, api_version="2024-10-21", max_retries=0
    ) as azure:
        batch = azure.batches.retrieve(batch_id)
        assert batch.status == "in_progress" and batch.endpoint == "/chat/completions"
        assert azure.batches.cancel(batch_id).status == "cancelling"
    assert sim.served("cancel", batch_id) == 1
    assert sim.counters()["cancels_applied"] == 1


def test_rate_limit_mode_gives_the_official_client_a_429_with_retry_after(
    clock: ManualClock,
) -> None:
    limited = Simulator(SimulatorConfig(api_key=KEY, seed=7, rate_limit_per_second=2), clock)
    batch_id = limited.create_batch(2)
    with (
        SimulatorServer(limited) as server,
        openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0) as official,
    ):
        assert [official.batches.retrieve(batch_id).id for _ in range(2)] == [batch_id] * 2
        with pytest.raises(openai.RateLimitError) as refused:
            official.batches.list(limit=1)  # the third request within the second
        headers = refused.value.response.headers
        assert headers["retry-after"] == "1" and headers["retry-after-ms"] == "500"
        assert refused.value.code == "rate_limit_exceeded"
        assert refused.value.body is not None and "Limit 2" in str(refused.value.body)
        clock.advance(0.5)  # a token again: the list pages on, auto-paging included
        assert [b.id for b in official.batches.list(limit=1)] == [batch_id]
        with pytest.raises(openai.RateLimitError):
            official.batches.cancel(batch_id)
    assert limited.rate_limiter is not None and limited.rate_limiter.refused == 2
    assert [endpoint for _, endpoint in limited.rate_limiter.arrivals()] == [
        "retrieve",
        "retrieve",
        "list",
    ]


def test_pages_of_a_hundred_read_alike_by_the_official_client_and_ours_through_the_limit(
    clock: ManualClock,
) -> None:
    """The reconciler's list walk reads pages of 100 with our client, one at a time
    (BatchApiClient.list_page); the official client must see the same pages, cursors and
    ``has_more``, and page on through rate-limit mode's 429 once a token is back."""
    limited = Simulator(SimulatorConfig(api_key=KEY, seed=3, rate_limit_per_second=2), clock)
    created = []
    for _ in range(250):
        created.append(limited.create_batch(1))
        clock.advance(0.01)
    newest_first = list(reversed(created))
    with (
        SimulatorServer(limited) as server,
        openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0) as official,
    ):
        raw = official.batches.with_raw_response.list(limit=100)
        body = raw.http_response.json()
        first = raw.parse()
        assert [b.id for b in first.data] == newest_first[:100] and first.has_more is True
        assert (body["first_id"], body["last_id"]) == (newest_first[0], newest_first[99])
        second = first.get_next_page()  # after=last_id: the second request in the second
        assert [b.id for b in second.data] == newest_first[100:200]
        with pytest.raises(openai.RateLimitError) as refused:
            second.get_next_page()  # the third
        assert refused.value.response.headers["retry-after-ms"] == "500"
        clock.advance(0.5)
        third = second.get_next_page()
        assert [b.id for b in third.data] == newest_first[200:] and third.has_more is False
        assert not third.has_next_page()
        for page in (first, second, third):
            for batch in page.data:
                strict(batch)
        # our client reads the same three pages (a token back before each)
        ours = BatchApiClient(
            ApiSettings(api_key=Secret(KEY), base_url=server.url),
            policy=RetryPolicy(max_in_process_attempts=1),
            clock=clock,
        )
        with ours:
            cursor: str | None = None
            pages = []
            for _ in range(3):
                clock.advance(0.5)
                listed = ours.list_page(cursor, 100)
                pages.append([b["id"] for b in listed.items])
                cursor = listed.next_after
        assert pages == [newest_first[:100], newest_first[100:200], newest_first[200:]]
        assert cursor is None  # has_more false: the walk ends there

"""Every fault kind over a real socket, and whether the request was processed."""

from __future__ import annotations

import time

import httpx
import pytest

from orchestrator.clock import ManualClock
from orchestrator.simulator import FaultRule, Simulator, SimulatorServer

from .conftest import AUTH, NO_TLS, MakeBatch


@pytest.fixture
def running(make_batch: MakeBatch, clock: ManualClock) -> str:
    """A batch that is in progress, so a processed cancel visibly changes it."""
    batch_id = make_batch(10)
    clock.advance(10)
    return batch_id


def status_of(sim: Simulator, batch_id: str) -> str:
    status: str = sim.batch(batch_id)["status"]
    return status


def test_status_fault_with_retry_headers_does_not_process_the_cancel(
    http: httpx.Client, sim: Simulator, running: str
) -> None:
    sim.add_fault(
        FaultRule(
            kind="status",
            endpoint="cancel",
            status=429,
            retry_after="3",
            retry_after_ms="1500",
            should_retry=True,
        )
    )
    response = http.post(f"/batches/{running}/cancel")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.headers["retry-after-ms"] == "1500"
    assert response.headers["x-should-retry"] == "true"
    assert response.headers["x-request-id"].startswith("req_")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "rate_limit_exceeded"
    assert status_of(sim, running) == "in_progress"
    assert sim.counters()["cancels_applied"] == 0

    again = http.post(f"/batches/{running}/cancel")  # times=1: used up
    assert again.status_code == 200 and again.json()["status"] == "cancelling"
    counters = sim.counters()
    assert counters["requests"]["cancel"] == {running: 2}
    assert counters["faults"] == {"status": 1}
    assert counters["cancels_applied"] == 1


def test_status_fault_with_http_date_and_should_retry_false(
    http: httpx.Client, sim: Simulator, running: str
) -> None:
    date = "Wed, 21 Oct 2026 07:28:00 GMT"
    sim.add_fault(FaultRule(kind="status", status=503, retry_after=date, should_retry=False))
    response = http.get(f"/batches/{running}")
    assert response.status_code == 503
    assert response.headers["retry-after"] == date
    assert response.headers["x-should-retry"] == "false"
    assert "retry-after-ms" not in response.headers
    assert response.json()["error"]["type"] == "server_error"


def test_html_fault(http: httpx.Client, sim: Simulator, running: str) -> None:
    sim.add_fault(FaultRule(kind="html", endpoint="cancel"))
    response = http.post(f"/batches/{running}/cancel")
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert "<html>" in response.text and "502 Bad Gateway" in response.text
    assert status_of(sim, running) == "in_progress"
    assert sim.counters()["faults"] == {"html": 1}


def test_slow_fault_times_out_a_short_client(
    server: SimulatorServer, sim: Simulator, running: str
) -> None:
    sim.add_fault(FaultRule(kind="slow", endpoint="retrieve", delay_s=0.4))
    with (
        httpx.Client(base_url=server.url, headers=AUTH, timeout=0.1, verify=NO_TLS) as short,
        pytest.raises(httpx.ReadTimeout),
    ):
        short.get(f"/batches/{running}")
    assert sim.counters()["faults"] == {"slow": 1}


def test_slow_cancel_is_processed(http: httpx.Client, sim: Simulator, running: str) -> None:
    sim.add_fault(FaultRule(kind="slow", endpoint="cancel", delay_s=0.05))
    started = time.monotonic()
    response = http.post(f"/batches/{running}/cancel")
    assert time.monotonic() - started >= 0.05
    assert response.status_code == 200 and response.json()["status"] == "cancelling"
    assert sim.counters()["cancels_applied"] == 1


def test_drop_before_closes_without_answer_or_effect(
    http: httpx.Client, sim: Simulator, running: str
) -> None:
    sim.add_fault(FaultRule(kind="drop_before", endpoint="cancel"))
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(f"/batches/{running}/cancel")
    assert status_of(sim, running) == "in_progress"
    assert sim.counters()["cancels_applied"] == 0
    assert http.get(f"/batches/{running}").status_code == 200  # the client reconnects


def test_drop_mid_processes_the_cancel_but_cuts_the_answer(
    http: httpx.Client, sim: Simulator, running: str
) -> None:
    sim.add_fault(FaultRule(kind="drop_mid", endpoint="cancel"))
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(f"/batches/{running}/cancel")
    assert status_of(sim, running) == "cancelling"  # the nasty case: done, never confirmed
    counters = sim.counters()
    assert counters["cancels_applied"] == 1
    assert counters["faults"] == {"drop_mid": 1}


def test_truncate_sends_half_the_file_then_closes(
    http: httpx.Client, sim: Simulator, make_batch: MakeBatch, clock: ManualClock
) -> None:
    batch_id = make_batch(200, body_bytes=1000)
    clock.advance(100)
    file_id = http.get(f"/batches/{batch_id}").json()["output_file_id"]
    full = http.get(f"/files/{file_id}/content").content
    sim.add_fault(FaultRule(kind="truncate", endpoint="content", file_id=file_id))
    received = bytearray()
    with (
        pytest.raises(httpx.RemoteProtocolError),
        http.stream("GET", f"/files/{file_id}/content") as response,
    ):
        assert int(response.headers["content-length"]) == len(full)
        for chunk in response.iter_raw():
            received += chunk
    assert bytes(received) == full[: len(full) // 2]
    assert http.get(f"/files/{file_id}/content").content == full
    assert sim.served("content", file_id) == 3


def test_rules_match_one_batch_only(
    http: httpx.Client, sim: Simulator, make_batch: MakeBatch
) -> None:
    target, other = make_batch(1), make_batch(1)
    sim.add_fault(FaultRule(kind="status", status=500, batch_id=target, times=None))
    assert http.get(f"/batches/{other}").status_code == 200
    assert http.get(f"/batches/{target}").status_code == 500
    assert http.get(f"/batches/{target}").status_code == 500
    assert http.get("/batches").status_code == 200  # list has no batch id
    sim.clear_faults()
    assert http.get(f"/batches/{target}").status_code == 200


def test_times_limits_how_often_a_rule_fires(
    http: httpx.Client, sim: Simulator, running: str
) -> None:
    sim.add_fault(FaultRule(kind="status", status=502, endpoint="retrieve", times=2))
    codes = [http.get(f"/batches/{running}").status_code for _ in range(4)]
    assert codes == [502, 502, 200, 200]
    assert sim.faults() == []


def test_probability_faults_are_seeded_and_counted(
    http: httpx.Client, sim: Simulator, running: str
) -> None:
    sim.add_fault(
        FaultRule(kind="status", status=500, endpoint="retrieve", probability=0.25, times=None)
    )
    codes = [http.get(f"/batches/{running}").status_code for _ in range(120)]
    failures = codes.count(500)
    assert 12 < failures < 50
    counters = sim.counters()
    assert counters["faults"] == {"status": failures}
    assert counters["requests"]["retrieve"][running] == 120


def test_faults_over_http(control: httpx.Client, http: httpx.Client, running: str) -> None:
    rules = [
        {"kind": "status", "status": 429, "endpoint": "retrieve", "retry_after": 1},
        {"kind": "html", "times": None},
    ]
    added = control.post("/_sim/faults", json=rules).json()
    assert added["added"] == 2
    assert [rule["kind"] for rule in control.get("/_sim/faults").json()["faults"]] == [
        "status",
        "html",
    ]
    assert http.get(f"/batches/{running}").status_code == 429
    assert http.get(f"/batches/{running}").status_code == 502
    assert control.delete("/_sim/faults").status_code == 200
    assert http.get(f"/batches/{running}").status_code == 200
    bad = control.post("/_sim/faults", json={"kind": "explode"})
    assert bad.status_code == 400 and set(bad.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }

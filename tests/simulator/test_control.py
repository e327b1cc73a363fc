"""The control surface: /_sim/ endpoints, counters, concurrency tracking, run_simulator."""

from __future__ import annotations

import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from orchestrator.clock import ManualClock
from orchestrator.simulator import FaultRule, Simulator, SimulatorServer, run_simulator
from orchestrator.simulator.run import build_parser

from .conftest import AUTH, KEY, NO_TLS


def test_create_batch_over_http_and_read_truth(control: httpx.Client, clock: ManualClock) -> None:
    response = control.post(
        "/_sim/batches",
        json={
            "requests": 30,
            "scenario": {"failed_request_ratio": 0.5, "running_s": 100},
            "age_s": 10,
            "metadata": {"k": "v"},
        },
    )
    assert response.status_code == 200, response.text
    batch = response.json()
    assert batch["status"] == "in_progress" and batch["metadata"] == {"k": "v"}
    batch_id = batch["id"]
    truth = control.get(f"/_sim/batches/{batch_id}/truth")
    assert truth.status_code == 409  # not terminal yet
    assert set(truth.json()["error"]) == {"message", "type", "param", "code"}
    control.post(f"/v1/batches/{batch_id}/cancel")
    clock.advance(10)
    body = control.get(f"/_sim/batches/{batch_id}/truth").json()
    assert len(body["truth"]) == 30
    assert sum(body["summary"].values()) == 30
    # Cancelled 8 s into a 100 s run: 2 of the 30 requests had finished.
    assert body["summary"]["error:batch_cancelled"] == 28
    assert control.get(f"/_sim/batches/{batch_id}").json()["status"] == "cancelled"
    assert control.get("/_sim/batches").json()["data"] == [batch_id]
    assert control.get("/_sim/batches/batch_nope/truth").status_code == 404


def test_create_batch_over_http_rejects_nonsense(control: httpx.Client) -> None:
    for body in (
        {"requests": "many"},
        {"scenario": {"warp": 9}},
        {"age_s": "old"},
        {"requests": -1},
    ):
        response = control.post("/_sim/batches", json=body)
        assert response.status_code == 400, body


def test_control_needs_the_key(server: SimulatorServer) -> None:
    assert httpx.get(f"{server.root_url}/_sim/counters", verify=NO_TLS).status_code == 401


def test_counters_over_http(control: httpx.Client, http: httpx.Client, sim: Simulator) -> None:
    batch_id = sim.create_batch(2)
    http.get(f"/batches/{batch_id}")
    http.get("/batches/batch_missing")
    http.get("/batches")
    counters = control.get("/_sim/counters").json()
    assert counters["requests"]["retrieve"] == {batch_id: 1, "batch_missing": 1}
    assert counters["requests"]["list"] == {"": 1}
    assert counters["requests_total"] == {"retrieve": 2, "list": 1}
    assert counters["batches"] == 1
    reset = control.delete("/_sim/counters").json()
    assert reset["requests"] == {}


def test_unauthorized_requests_are_counted_but_not_faulted(
    server: SimulatorServer, sim: Simulator
) -> None:
    batch_id = sim.create_batch(1)
    sim.add_fault(FaultRule(kind="status", status=500))
    response = httpx.get(f"{server.url}/batches/{batch_id}", verify=NO_TLS)
    assert response.status_code == 401
    assert sim.served("retrieve", batch_id) == 1
    assert len(sim.faults()) == 1


def test_max_concurrent_cancels(
    server: SimulatorServer, sim: Simulator, clock: ManualClock
) -> None:
    batch_id = sim.create_batch(10)
    other = sim.create_batch(10)
    clock.advance(10)
    parallel = 4
    # Each cancel is held 0.5 s on the server, so the four overlap.
    sim.add_fault(
        FaultRule(kind="slow", endpoint="cancel", batch_id=batch_id, delay_s=0.5, times=None)
    )
    barrier = threading.Barrier(parallel)

    def cancel(_: int) -> int:
        with httpx.Client(base_url=server.url, headers=AUTH, verify=NO_TLS) as client:
            barrier.wait()
            return client.post(f"/batches/{batch_id}/cancel").status_code

    with ThreadPoolExecutor(parallel) as pool:
        codes = list(pool.map(cancel, range(parallel)))
    assert codes == [200] * parallel
    with httpx.Client(base_url=server.url, headers=AUTH, verify=NO_TLS) as client:
        client.post(f"/batches/{other}/cancel")
    counters = sim.counters()
    assert counters["max_concurrent_cancels"] == {batch_id: parallel, other: 1}
    assert counters["max_concurrent_cancels_any_batch"] == parallel
    assert counters["max_concurrent_cancels_total"] == parallel
    assert counters["cancels_in_flight"] == {}
    assert counters["requests"]["cancel"] == {batch_id: parallel, other: 1}
    assert counters["cancels_applied"] == 2  # one state change per batch


class _Output(io.StringIO):
    """Captures what run_simulator prints and says when it is ready."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = threading.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        if "Ctrl+C" in text:
            self.ready.set()
        return written


def test_run_simulator_serves_until_stopped(tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps([{"kind": "status", "status": 503, "endpoint": "list"}]))
    stop = threading.Event()
    out = _Output()
    thread = threading.Thread(
        target=run_simulator,
        kwargs={
            "port": 0,
            "api_key": KEY,
            "time_scale": 60,
            "faults_file": faults,
            "seed": 3,
            "stop": stop,
            "out": out,
        },
    )
    thread.start()
    try:
        assert out.ready.wait(timeout=10)
        url = next(
            line.split()[-1] for line in out.getvalue().splitlines() if "listening on" in line
        )
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        assert f"OPENAI_API_KEY={KEY}" in out.getvalue()
        with httpx.Client(base_url=url, headers=AUTH, verify=NO_TLS) as client:
            assert client.get("/batches").status_code == 503  # the fault file was loaded
            assert client.get("/batches").status_code == 200
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert "Simulator stopped." in out.getvalue()


def test_run_simulator_rejects_a_bad_fault_file(tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"kind": "meteor"}))
    with pytest.raises(ValueError):
        run_simulator(port=0, faults_file=faults, out=io.StringIO())


def test_cli_parser_defaults() -> None:
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.api_key, args.time_scale, args.faults, args.seed) == (
        "127.0.0.1",
        8089,
        "sk-sim-local",
        1.0,
        None,
        None,
    )

"""JSON log lines carry the batch id and the API's request id wherever they are known."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator import logs
from orchestrator.api.client import ApiSettings, BatchApiClient
from orchestrator.cli.main import main
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.secret import Secret
from orchestrator.simulator import DEFAULT_API_KEY, Simulator, SimulatorConfig, SimulatorServer


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_api_calls_log_the_batch_and_request_ids(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("DEBUG", "json", Secret(DEFAULT_API_KEY))
    sim = Simulator(SimulatorConfig(seed=2))
    batch_id = sim.create_batch(2, age_s=30)
    with (
        SimulatorServer(sim) as server,
        BatchApiClient(
            ApiSettings(api_key=Secret(DEFAULT_API_KEY), base_url=server.url),
            policy=RetryPolicy(),
        ) as client,
    ):
        answer = client.retrieve(batch_id)
    (line,) = [e for e in lines(capsys.readouterr().err) if e.get("action") == "retrieve"]
    assert line["batch_id"] == batch_id
    assert line["request_id"] == answer.request_id and line["request_id"].startswith("req_")
    assert line["level"] == "debug" and line["logger"] == "orchestrator.api.client"


def test_bound_ids_reach_every_line_inside_the_block(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json", Secret(""))
    log = logging.getLogger("orchestrator.test")
    with logs.bind(batch_id="batch_outer"):
        log.info("inside")
        with logs.bind(batch_id="batch_inner", request_id="req_1"):
            log.info("nested")
        log.info("own", extra={"batch_id": "batch_own"})
    log.info("outside")
    inside, nested, own, outside = lines(capsys.readouterr().err)
    assert inside["batch_id"] == "batch_outer" and "request_id" not in inside
    assert (nested["batch_id"], nested["request_id"]) == ("batch_inner", "req_1")
    assert own["batch_id"] == "batch_own"
    assert "batch_id" not in outside


def test_text_lines_end_with_the_ids(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "text", Secret(""))
    with logs.bind(batch_id="batch_t", request_id="req_t"):
        logging.getLogger("orchestrator.test").warning("poll failed")
    assert (
        capsys.readouterr().err.rstrip().endswith("poll failed [batch_id=batch_t request_id=req_t]")
    )


def test_under_json_every_stderr_line_of_worker_and_reconcile_is_json(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`orchestrator --log-format json worker 2>&1 | jq` must not choke on a summary."""
    sim = Simulator(SimulatorConfig(seed=4))
    batch_id = sim.create_batch(3, age_s=30)
    with SimulatorServer(sim) as server:
        monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", sqlite_url)
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", DEFAULT_API_KEY)
        assert main(["cancel", batch_id]) == 0
        capsys.readouterr()
        main(["--log-format", "json", "worker", "--once"])
        main(["--log-format", "json", "reconcile", "--once"])
    err = capsys.readouterr().err
    records = [json.loads(line) for line in err.splitlines()]  # fails on any non-JSON line
    summaries = [r for r in records if r.get("action") == "summary"]
    assert [s["message"].split(" ")[0] for s in summaries] == ["worker", "reconciler"]
    assert summaries[0]["report"]["accepted"] == 1


def test_the_key_is_scrubbed_from_structured_extras_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A summary logs its whole report as one extra; a key in it must not get out."""
    key = "sk-structured-SECRET-0123"
    logs.configure("INFO", "json", Secret(key))
    report = {"auth_error": f"refused {key}", "counts": [1, 2]}
    logging.getLogger("orchestrator.cli").info("done", extra={"report": report})
    err = capsys.readouterr().err
    assert key not in err
    assert json.loads(err)["report"] == {"auth_error": "refused ***", "counts": [1, 2]}


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_secret_is_scrubbed_from_the_message_extras_and_bound_ids(
    capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """Each secret, wherever it is: in the message's arguments, in an extra, in a bound
    id; a secret that holds another is replaced whole, not left half-shown."""
    key, password = "sk-outer-pw-hunter22-tail", "pw-hunter22"
    logs.configure("INFO", fmt, Secret(password), Secret(key))
    with logs.bind(batch_id=f"batch_{password}"):
        logging.getLogger("orchestrator.cli").info(
            "sent %s and %s", key, password, extra={"request_id": f"req {key}", "n": 3}
        )
    err = capsys.readouterr().err
    assert "hunter22" not in err
    assert "sent *** and ***" in err
    assert "batch_***" in err and "req ***" in err


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_key_is_scrubbed_from_an_exception_and_a_stack_too(
    capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """`log.exception` of an error whose message quotes the key (a server echoing the
    Authorization header, a driver quoting the URL) showed it whole."""
    key = "sk-in-an-exception-0123"
    logs.configure("INFO", fmt, Secret(key))
    log = logging.getLogger("orchestrator.test")
    try:
        raise RuntimeError(f"the server said: bad key {key}")
    except RuntimeError:
        log.exception("the call failed")
    # a stack shows source lines, and a line may hold the key (`configure` has logging
    # collect no stack, but a record may come with one)
    stack = f"Stack (most recent call last):\n  call('{key}')"
    log.handle(log.makeRecord(log.name, logging.WARNING, "f.py", 1, "here", (), None, sinfo=stack))
    err = capsys.readouterr().err
    assert key not in err
    assert "call('***')" in err or fmt == "json"  # the JSON lines show no stack
    assert "RuntimeError: the server said: bad key ***" in (
        err if fmt == "text" else lines(err)[0]["exception"]
    )

"""`orchestrator healthcheck`: its exit codes, human and --json."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.cli.main import main
from orchestrator.db import migrate
from orchestrator.db.database import Database
from orchestrator.simulator import DEFAULT_API_KEY, Simulator, SimulatorConfig, SimulatorServer

from .conftest import Run, as_json


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    simulator = Simulator(SimulatorConfig(seed=1))
    with SimulatorServer(simulator) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", DEFAULT_API_KEY)
        yield simulator


def test_a_migrated_quiet_database_is_healthy(database: Database, run: Run) -> None:
    code, out, _ = run("healthcheck")
    assert code == 0
    head = migrate.head_revision()
    assert f"ok (revision {head})" in out and "sending: not paused" in out
    code, out, _ = run("healthcheck", "--json")
    report = as_json(out)
    assert (code, report["healthy"], report["revision"], report["api"]) == (0, True, head, None)


def test_paused_sending_is_exit_1_and_overdue_is_reported(fleet: Database, run: Run) -> None:
    code, out, _ = run("healthcheck")
    assert code == 1
    assert "sending PAUSED until" in out and "the API refused our key" in out
    assert "overdue batches: 1; cancels waiting to be sent: 1" in out
    _, out, _ = run("healthcheck", "--json")
    report = as_json(out)
    assert (report["healthy"], report["overdue"], report["cancels_pending"]) == (False, 1, 1)


def test_resume_lifts_the_pause_and_health_is_green_again(fleet: Database, run: Run) -> None:
    code, out, _ = run("resume", "--json")
    lifted = as_json(out)
    assert code == 0 and lifted["was_paused"] is True
    assert "the API refused our key" in lifted["reason"]
    code, out, _ = run("healthcheck")
    assert code == 0 and "sending: not paused" in out
    code, _, err = run("resume")
    assert code == 0 and "sending was not paused" in err


def test_an_unmigrated_database_is_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "new.sqlite3"
    sqlite3.connect(path).close()  # there, but without a schema
    url = f"sqlite:///{path}"
    assert main(["--database-url", url, "healthcheck"]) == 3
    assert "run `orchestrator db upgrade`" in capsys.readouterr().out
    assert main(["--database-url", url, "healthcheck", "--json"]) == 3
    report = as_json(capsys.readouterr().out)
    assert report["revision"] is None and report["healthy"] is False


def test_an_unreachable_database_is_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://nobody@127.0.0.1:1/nothing"
    assert main(["--database-url", url, "healthcheck"]) == 3
    assert "FAILED" in capsys.readouterr().out


def test_the_api_check_passes_with_the_key(database: Database, run: Run, api: Simulator) -> None:
    code, out, _ = run("healthcheck", "--api")
    assert code == 0
    assert "api http://127.0.0.1" in out and ": ok" in out
    assert api.served("list") == 1


def test_a_refused_key_is_exit_1_with_the_cause(
    database: Database, run: Run, api: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key")
    code, out, _ = run("healthcheck", "--api", "--json")
    assert code == 1
    assert "HTTP 401" in as_json(out)["api"]
    assert "sk-wrong-key" not in out


def test_no_key_is_a_settings_error(database: Database, run: Run) -> None:
    code, out, _ = run("healthcheck", "--api")
    assert code == 2
    assert "OPENAI_API_KEY is not set" in out


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["healthcheck", "--help"])
    out = capsys.readouterr().out
    for line in ("0  healthy", "1  the API check failed", "3  database unreachable"):
        assert line in out


@pytest.mark.parametrize("command", ["worker", "reconcile"])
def test_help_says_a_stop_ends_the_calls_in_flight_at_once(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stop aborts the calls in flight (`client.abort`, README); --help said the
    sends were finished first."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "end the" in text and "in flight at once" in text and "tried again later" in text
    assert "finish" not in text

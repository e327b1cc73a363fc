"""Bad input the other tests did not cover yet (docs/bad-input.md lists every kind tried).

Settings, ids on the command line, an unreachable or flaky database, nonsense
answers to a poll, an empty result file: each is refused or ridden out with a
message that names the cause, never a traceback and never a lost request.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from orchestrator.cli.context import Context
from orchestrator.cli.main import main
from orchestrator.clock import ManualClock, SystemClock
from orchestrator.core.harvest import FileState
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.db.batches import BatchStore
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, CancelRequest
from orchestrator.db.polls import PollStore
from orchestrator.db.results import ResultStore
from orchestrator.errors import DatabaseUnavailable
from orchestrator.processes.ingest import FileIngest, IngestSettings
from orchestrator.processes.reconciler import Reconciler, ReconcilerConfig
from orchestrator.processes.worker import CancelWorker, WorkerConfig
from orchestrator.settings import load_settings
from orchestrator.simulator import (
    DEFAULT_API_KEY,
    Scenario,
    Simulator,
    SimulatorConfig,
    SimulatorServer,
)
from tests.integration.conftest import make_async_client, make_client

GOOD_ID = "batch_0123456789abcdef"


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> str:
    """A clean environment for `orchestrator ...`: a migrated SQLite file, a key, no file."""
    for name in ("ORCHESTRATOR_CONFIG", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-bad-input-test")
    return sqlite_url


# --- settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ORCHESTRATOR_WORKER_CONCURRENCY", "many"),
        ("ORCHESTRATOR_WORKER_CONCURRENCY", "2.5"),
        ("ORCHESTRATOR_WORKER_LEASE_SECONDS", "0"),
        ("ORCHESTRATOR_POLL_INITIAL_SECONDS", "-5"),
        ("ORCHESTRATOR_WORKER_LEASE_SECONDS", "nan"),
        ("ORCHESTRATOR_POLL_MAX_SECONDS", "inf"),
        ("ORCHESTRATOR_DATABASE_URL", "mysql://db/orchestrator"),
        ("ORCHESTRATOR_DATABASE_URL", "not a url"),
        ("OPENAI_BASE_URL", "ftp://api.openai.com/v1"),
        ("OPENAI_BASE_URL", "api.openai.com"),
        ("ORCHESTRATOR_LOG_FORMAT", "xml"),
        ("ORCHESTRATOR_LOG_LEVEL", "LOUD"),
        ("ORCHESTRATOR_CONFIG", "/nonexistent/orchestrator.toml"),
    ],
)
def test_a_bad_setting_is_a_usage_error_naming_it(
    cli_env: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err
    assert name in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[worker]\nconcurrency = 'lots'\n", "concurrency"),
        ("[worker]\nspeed = 3\n", "worker_speed"),
        ("api_key = 'sk-in-a-file'\n", "OPENAI_API_KEY only"),
        ("[worker\nconcurrency = 3\n", "not valid TOML"),
        # an integer too large for a float: OverflowError, once a traceback and exit 1
        (f"[worker]\nlease_seconds = 1{'0' * 400}\n", "worker_lease_seconds"),
    ],
)
def test_a_bad_config_file_is_a_usage_error_naming_the_file_and_key(
    cli_env: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    toml: str,
    named: str,
) -> None:
    path = tmp_path / "orchestrator.toml"
    path.write_text(toml)
    monkeypatch.setenv("ORCHESTRATOR_CONFIG", str(path))
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and named in err
    assert "sk-in-a-file" not in err  # a key put in the file is refused, never echoed


@pytest.mark.parametrize("flags", [[], ["--json"]])
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://ops:hunter2pw@db.internal/orch", "postgresql://ops:***@db.internal/orch"),
        ("postgresql://ops@db/orch?password=hunter2pw", "postgresql://ops@db/orch?password=***"),
    ],
)
def test_config_show_hides_the_database_password(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    url: str,
    shown: str,
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-shown-0123")
    assert main(["config", "show", *flags]) == 0
    out = capsys.readouterr().out
    assert shown in out
    assert "hunter2pw" not in out and "sk-never-shown" not in out


def test_config_show_on_a_narrow_terminal_folds_a_long_value_never_crops_it(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql://ops@db.internal.example.com:5432/testdb_of_the_orchestrator"
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", url)
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["config", "show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    first = next(n for n, line in enumerate(lines) if line.split()[:1] == ["database_url"])
    start = lines[first].index("postgresql")
    end = lines[first].index(" ORCH")  # the next column: the environment variable
    pieces = [lines[first][start:end].strip()]
    for line in lines[first + 1 :]:
        if line[:start].strip():  # the next setting's row
            break
        pieces.append(line[start:end].strip())
    assert "".join(pieces) == url  # was `postgresql://ops@d`, the rest cut without a mark


@pytest.mark.parametrize(
    "url",
    ["postgresql://ops:hunter2pw@db/orch", "postgresql://ops@db/orch?password=hunter2pw"],
)
def test_the_repr_of_the_settings_and_the_cli_context_hides_the_password(url: str) -> None:
    # a repr reaches a traceback's locals, a debugger, a log line written in haste
    settings = load_settings(environ={"ORCHESTRATOR_DATABASE_URL": url})
    args = argparse.Namespace(setting_database_url=url)  # `--database-url`, as typed
    for shown in (repr(settings), repr(Context(settings=settings, args=args))):
        assert "hunter2pw" not in shown
        assert "postgresql://ops" in shown and "***" in shown


@pytest.mark.postgres
@pytest.mark.parametrize("command", [["db", "upgrade"], ["healthcheck"], ["healthcheck", "--json"]])
def test_db_upgrade_and_healthcheck_hide_a_password_in_the_query(
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    # psycopg takes `?password=` too; SQLAlchemy's own hiding leaves the query as it is
    # (the test server trusts local connections: the password is not checked)
    monkeypatch.delenv("ORCHESTRATOR_CONFIG", raising=False)
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", f"{pg_url}?password=TopSecretPW")
    assert main(command) == 0
    printed = "".join(capsys.readouterr())
    assert "TopSecretPW" not in printed
    assert "?password=***" in printed


@pytest.mark.postgres
def test_a_database_not_migrated_is_named_without_a_password_in_the_query(
    empty_pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ORCHESTRATOR_CONFIG", raising=False)
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", f"{empty_pg_url}?password=TopSecretPW")
    assert main(["status"]) == 3
    err = capsys.readouterr().err
    assert "db upgrade" in err and "TopSecretPW" not in err and "?password=***" in err


# --- batch ids on the command line ----------------------------------------------------


def test_cancel_reports_malformed_ids_and_records_the_rest(
    cli_env: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text(
        f"{GOOD_ID}\n../../etc/passwd\n\n# a comment\nbatch_a b\n{'x' * 200}\n{GOOD_ID}\n"
    )
    assert main(["cancel", "--from-file", str(ids), "--by", "test"]) == 1  # done; needs a look
    err = capsys.readouterr().err
    assert err.count("rejected:") == 3 and "../../etc/passwd" in err
    db = Database.connect(cli_env)
    with db.transaction() as s:
        assert s.scalars(select(CancelRequest.batch_id)).all() == [GOOD_ID]
    db.dispose()


@pytest.mark.parametrize("command", ["cancel", "track"])
def test_only_malformed_ids_is_a_usage_error_and_records_nothing(
    cli_env: str, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    assert main([command, "batch/../x", "a b"]) == 2
    assert "no valid batch id given" in capsys.readouterr().err
    db = Database.connect(cli_env)
    with db.transaction() as s:
        assert s.scalars(select(Batch.id)).all() == []
    db.dispose()


def test_an_ids_file_that_cannot_be_read_is_a_usage_error(
    cli_env: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["cancel", "--from-file", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err


# --- the database ---------------------------------------------------------------------


def test_worker_once_is_exit_1_when_a_cancel_failed_for_good(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped id ends `failed` (404): a cron job must notice, so exit 1 (needs a person)."""
    sim = Simulator(SimulatorConfig(seed=3), SystemClock())
    real = sim.create_batch(5, Scenario(), age_s=10)
    with SimulatorServer(sim) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", DEFAULT_API_KEY)
        assert main(["cancel", real]) == 0
        assert main(["worker", "--once"]) == 0  # every cancel landed
        assert main(["cancel", "batch_doesnotexist"]) == 0
        assert main(["worker", "--once"]) == 1
    err = capsys.readouterr().err
    assert "1 failed" in err


@pytest.mark.parametrize("command", [["worker", "--once"], ["reconcile", "--once"], ["cancel"]])
def test_an_unreachable_database_is_exit_3_naming_it(
    cli_env: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nothing")
    args = [*command, GOOD_ID] if command == ["cancel"] else command
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "database" in err and "Traceback" not in err
    assert err.count("port 1 failed") == 1  # said once, not once per wrapping layer


def test_global_options_work_after_the_command_too(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", "sqlite:////nonexistent/elsewhere.sqlite3")
    assert main(["status", "--database-url", cli_env]) == 0
    assert main(["--database-url", cli_env, "status"]) == 0  # not undone by the command
    assert main(["db", "current", "--database-url", cli_env, "--log-level", "ERROR"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_a_page_size_past_the_apis_limit_is_refused_briefly(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["sync", "--page-size", "500"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "the API lists at most 100 a page" in err and "99" not in err


@pytest.mark.parametrize(
    "command", [["status"], ["show", GOOD_ID], ["worker", "--once"], ["db", "current"]]
)
def test_a_mistyped_sqlite_path_is_exit_3_and_creates_nothing(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: list[str],
) -> None:
    missing = tmp_path / "nodir" / "typo.sqlite3"
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", f"sqlite:///{missing}")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert main(command) == 3
    assert f"no database at {missing}" in capsys.readouterr().err
    assert not missing.parent.exists()


def test_healthcheck_of_a_missing_sqlite_file_says_so_and_claims_no_counts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "typo.sqlite3"
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", f"sqlite:///{missing}")
    assert main(["healthcheck", "--json"]) == 3
    health = json.loads(capsys.readouterr().out)
    assert f"no database at {missing}" in health["database_error"]
    assert (health["overdue"], health["cancels_pending"], health["healthy"]) == (None, None, False)
    assert not missing.exists()


def test_a_tilde_in_a_sqlite_path_is_the_home_directory_for_every_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", "sqlite:///~/orch/o.sqlite3")
    assert main(["db", "upgrade"]) == 0
    assert (tmp_path / "orch" / "o.sqlite3").exists()
    assert main(["status"]) == 0  # the same file, found
    assert "no batch matches" in capsys.readouterr().out


def test_a_sqlite_url_with_two_slashes_is_a_usage_error_explaining_the_slashes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", "sqlite://tmp/ux/orchestrator.sqlite3")
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert "three slashes" in err and "Traceback" not in err


def test_db_current_on_an_empty_database_is_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "empty.sqlite3"
    sqlite3.connect(empty).close()
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", f"sqlite:///{empty}")
    assert main(["db", "current"]) == 3
    assert "behind: run `orchestrator db upgrade`" in capsys.readouterr().out


def test_db_commands_on_a_database_a_newer_release_migrated_say_so_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Not "behind: run `orchestrator db upgrade`": that cannot work, alembic does not know
    the newer revision. Exit 3 (not migrated), as a database behind is."""
    newer = tmp_path / "newer.sqlite3"
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", f"sqlite:///{newer}")
    assert main(["db", "upgrade"]) == 0
    with sqlite3.connect(newer) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0099_newer'")
    connection.close()
    capsys.readouterr()
    assert main(["db", "current"]) == 3
    out = capsys.readouterr().out
    assert "ahead/unknown (newer release)" in out and "behind" not in out, out
    assert main(["db", "current", "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["state"] == "newer"
    assert main(["db", "upgrade"]) == 3  # not 2, "bad arguments": none were given
    err = capsys.readouterr().err
    assert "0099_newer" in err and "newer release" in err and "Traceback" not in err, err
    assert main(["healthcheck"]) == 3
    said = "".join(capsys.readouterr())
    assert "newer release" in said and "run `orchestrator db upgrade`" not in said, said


def test_the_worker_rides_out_a_database_outage(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = Simulator(SimulatorConfig(seed=5), SystemClock())
    batch_id = sim.create_batch(10, Scenario(), age_s=10)
    CancelStore(database).request([batch_id], now=SystemClock().now(), requested_by="test")
    real_claim = CancelStore.claim_due
    outages = [2]

    def flaky_claim(self: CancelStore, *args: Any, **kwargs: Any) -> Any:
        if outages[0] > 0:
            outages[0] -= 1
            raise DatabaseUnavailable("database unavailable: server closed the connection")
        return real_claim(self, *args, **kwargs)

    monkeypatch.setattr(CancelStore, "claim_due", flaky_claim)
    with SimulatorServer(sim) as server:
        client = make_async_client(server.url, ManualClock())
        worker = CancelWorker(
            CancelStore(database),
            client,
            config=WorkerConfig(concurrency=2, idle_seconds=0.01, db_retry_max_seconds=0.01),
            policy=RetryPolicy(),
            clock=SystemClock(),
            owner="outage-test",
        )
        report = worker.run(threading.Event(), once=True)
    assert report.db_outages == 2 and report.accepted == 1
    assert sim.served("cancel", batch_id) == 1


# --- nonsense answers to a poll -------------------------------------------------------


def _answering(
    body: bytes, content_type: str, status: int = 200
) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"content-type": content_type})

    return handler


NOT_FOUND = orjson.dumps(
    {"error": {"message": "No batch found", "type": "invalid_request_error", "code": None}}
)


@pytest.mark.parametrize(
    ("status", "body", "content_type", "why"),
    [
        (200, b"<html><body>502 Bad Gateway</body></html>", "text/html", "not a JSON object"),
        (200, b'{"id": "' + GOOD_ID.encode() + b'", "status"', "application/json", "JSON object"),
        (200, orjson.dumps({"id": GOOD_ID, "object": "batch"}), "application/json", "status"),
        (200, orjson.dumps({"id": "batch_x", "status": "failed"}), "application/json", "batch_x"),
        (200, orjson.dumps([{"id": GOOD_ID, "status": "failed"}]), "application/json", "object"),
        (404, NOT_FOUND, "application/json", "no such batch for this key"),
    ],
    ids=["html", "cut-json", "no-status", "other-batch", "array", "404"],
)
def test_a_nonsense_answer_to_a_poll_is_a_poll_failure_never_a_crash(
    database: Database, status: int, body: bytes, content_type: str, why: str
) -> None:
    clock = ManualClock()
    BatchStore(database).track([GOOD_ID], now=clock.now(), source="track")
    answer = _answering(body, content_type, status)
    client = make_client("http://api.test/v1", clock, transport=httpx.MockTransport(answer))
    config = ReconcilerConfig(concurrency=1)
    with Reconciler(database, client, config, clock, "nonsense-test") as reconciler:
        summary = reconciler.run_once()
    assert (summary.polled, summary.poll_failures) == (0, 1)
    with database.transaction() as s:
        row = s.get(Batch, GOOD_ID)
        assert row is not None
        assert row.status is None and row.poll_failures == 1  # nothing believed, nothing failed
        assert row.last_error is not None and why in row.last_error, row.last_error
        assert row.next_poll_at is not None and row.next_poll_at > clock.now()
        assert row.lease_owner is None


# --- an empty result file -------------------------------------------------------------


def test_an_empty_result_file_is_done_with_no_rows(database: Database) -> None:
    clock = ManualClock()
    BatchStore(database).track([GOOD_ID], now=clock.now(), source="track")
    PollStore(database).claim_due(now=clock.now(), owner="empty", lease_seconds=60, limit=1)
    client = make_client(
        "http://files.test/v1", clock, transport=httpx.MockTransport(_answering(b"", "text/plain"))
    )
    ingest = FileIngest(
        client=client,
        results=ResultStore(database),
        clock=clock,
        owner="empty",
        settings=IngestSettings(),
    )
    outcome = ingest.run(batch_id=GOOD_ID, file_id="file-empty", kind="output")
    assert outcome.state is FileState.DONE and outcome.inserted == 0 and outcome.malformed == 0
    (record,) = ResultStore(database).files(GOOD_ID)
    assert (record.state, record.lines, record.bytes, record.results) == ("done", 0, 0, 0)

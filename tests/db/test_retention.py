"""Pruning old rows of ended batches, on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from orchestrator.cli.main import main
from orchestrator.clock import utcnow
from orchestrator.db.database import Database
from orchestrator.db.models import (
    Batch,
    BatchEvent,
    BatchResult,
    CancelRequest,
    ResultFile,
    ResultLineError,
    WebhookEvent,
)
from orchestrator.db.retention import RetentionStore
from orchestrator.errors import ConfigError
from orchestrator.processes.retention import Pruner

from .retention_seed import seed_batch

MONTH = timedelta(days=30)


def count(
    db: Database, model: type[BatchResult | ResultLineError | BatchEvent], batch_id: str
) -> int:
    with db.transaction() as session:
        found = session.scalar(select(func.count()).where(model.batch_id == batch_id))
        return int(found or 0)


@pytest.fixture
def seeded(database: Database) -> Database:
    now = utcnow()
    seed_batch(database, "batch_old", now=now, ended_at=now - timedelta(days=40), results=120)
    seed_batch(database, "batch_recent", now=now, ended_at=now - timedelta(days=3), results=50)
    seed_batch(database, "batch_open", now=now - timedelta(days=60), ended_at=None, results=30)
    return database


def test_only_old_rows_of_ended_batches_go_in_small_chunks_and_batches_stay(
    seeded: Database,
) -> None:
    chunks: list[int] = []
    pruner = Pruner(RetentionStore(seeded, chunk_rows=25), on_chunk=lambda: chunks.append(1))
    plan = pruner.plan(MONTH)
    assert plan.batch_ids == ["batch_old"]
    assert (plan.counts.results, plan.counts.line_errors, plan.counts.events) == (120, 2, 1)

    done = pruner.prune(plan)

    assert done == plan.counts
    assert len(chunks) == 5 + 1 + 1  # 120 results in 25s, then the line errors, then the event
    assert (
        count(seeded, BatchResult, "batch_old"),
        count(seeded, ResultLineError, "batch_old"),
    ) == (
        0,
        0,
    )
    assert count(seeded, BatchEvent, "batch_old") == 2  # the recent events stay
    for kept, n in (("batch_recent", 50), ("batch_open", 30)):
        assert count(seeded, BatchResult, kept) == n
        assert count(seeded, BatchEvent, kept) == 3
    with seeded.transaction() as session:
        old = session.get(Batch, "batch_old")
        request = session.get(CancelRequest, "batch_old")
        result_file = session.get(
            ResultFile, {"batch_id": "batch_old", "file_id": "file-batch_old"}
        )
        assert old is not None and old.results_pruned_at is not None
        assert old.results_stored == 120  # what we had, still said
        assert request is not None and request.outcome == "cancelled"
        assert result_file is not None and result_file.sha256 == "ab" * 32
    assert pruner.prune(pruner.plan(MONTH)).results == 0  # nothing left to do


def test_the_archive_holds_every_pruned_row_and_is_never_overwritten(
    seeded: Database, tmp_path: Path
) -> None:
    pruner = Pruner(RetentionStore(seeded, chunk_rows=1000))
    archive = tmp_path / "pruned.jsonl.gz"
    pruner.prune(pruner.plan(MONTH), archive=archive)
    with gzip.open(archive, "rt") as handle:
        records = [json.loads(line) for line in handle]
    results = [r for r in records if r["record"] == "result"]
    assert sorted(r["custom_id"] for r in results) == sorted(f"req-{i}" for i in range(120))
    assert {r["batch_id"] for r in records} == {"batch_old"}
    assert results[0]["body"] == {"n": 0} and results[0]["status_code"] == 200
    assert [r["line_number"] for r in records if r["record"] == "line_error"] == [121, 122]
    assert archive.stat().st_mode & 0o777 == 0o600

    with pytest.raises(ConfigError, match="exists"):
        pruner.prune(pruner.plan(MONTH), archive=archive)
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    link = tmp_path / "link.jsonl.gz"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="exists"):
        pruner.prune(pruner.plan(MONTH), archive=link)
    assert target.read_text() == "keep me"


@pytest.mark.parametrize(
    "body",
    [
        '{"n":123456789012345678901234567890}',  # beyond 64 bits: orjson reads a float
        '{"a":1,"a":2}',  # a repeated key: a dict keeps one
        '{"x":0.30000000000000000001}',  # more digits than a double holds
        '{"s": "spaced" ,"e":"\\u00e9"}',  # whitespace, an escape
    ],
)
def test_the_archive_holds_each_body_as_stored(
    database: Database, tmp_path: Path, body: str
) -> None:
    """Once pruned, the archive is the body's only copy: its text, not a re-encoding."""
    now = utcnow()
    seed_batch(
        database, "batch_old", now=now, ended_at=now - timedelta(days=40), results=0, line_errors=0
    )
    with database.transaction() as session:
        value = "CAST(:body AS json)" if database.is_postgres else ":body"
        session.execute(
            text(
                "INSERT INTO batch_results (batch_id, custom_id, file_id, file_kind, "
                "line_number, status_code, body) VALUES "
                f"('batch_old', 'r1', 'file-batch_old', 'output', 1, 200, {value})"
            ),
            {"body": body},
        )
    pruner = Pruner(RetentionStore(database))
    archive = tmp_path / "pruned.jsonl.gz"
    assert pruner.prune(pruner.plan(MONTH), archive=archive).results == 1
    with gzip.open(archive) as handle:
        line = handle.readline()
    assert b',"body":' + body.encode() + b',"error_code":' in line
    assert json.loads(line)["custom_id"] == "r1"  # still one JSON document a line


def test_a_prune_interrupted_after_its_first_chunk_still_says_results_were_pruned(
    seeded: Database, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The marker comes with the first chunk: a prune killed any time after it leaves
    a batch that says why its results are missing (the next prune may find none)."""

    def killed() -> None:
        raise KeyboardInterrupt

    pruner = Pruner(RetentionStore(seeded, chunk_rows=25), on_chunk=killed)
    with pytest.raises(KeyboardInterrupt):
        pruner.prune(pruner.plan(MONTH))
    assert count(seeded, BatchResult, "batch_old") == 120 - 25
    with seeded.transaction() as session:
        old = session.get(Batch, "batch_old")
        assert old is not None and old.results_pruned_at is not None
        recent = session.get(Batch, "batch_recent")
        assert recent is not None and recent.results_pruned_at is None
    capsys.readouterr()
    assert main(["results", "batch_old", "--database-url", db_url]) == 0
    assert "`orchestrator prune` removed the results of batch_old" in capsys.readouterr().err


def test_a_failed_archive_deletes_nothing(seeded: Database, tmp_path: Path) -> None:
    pruner = Pruner(RetentionStore(seeded))
    with pytest.raises(ConfigError, match="cannot create"):
        pruner.prune(pruner.plan(MONTH), archive=tmp_path / "no-such-dir" / "a.jsonl.gz")
    assert count(seeded, BatchResult, "batch_old") == 120


def test_cli_dry_run_counts_then_prune_removes(
    seeded: Database, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert (
        main(["prune", "--older-than", "30d", "--dry-run", "--json", "--database-url", db_url]) == 0
    )
    said = json.loads(capsys.readouterr().out)
    assert said["dry_run"] is True
    assert (said["batches"], said["results"], said["line_errors"], said["events"]) == (1, 120, 2, 1)
    assert count(seeded, BatchResult, "batch_old") == 120

    assert main(["prune", "--older-than", "30d", "--database-url", db_url]) == 0
    assert "removed 120 result(s), 2 unreadable line(s) and 1 event(s) of 1 batch(es)" in (
        capsys.readouterr().err
    )
    assert count(seeded, BatchResult, "batch_old") == 0


def test_cli_needs_an_age(
    seeded: Database, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["prune", "--database-url", db_url]) == 2
    assert "--older-than" in capsys.readouterr().err


def test_results_of_a_pruned_batch_say_so(
    seeded: Database, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    Pruner(RetentionStore(seeded)).prune(Pruner(RetentionStore(seeded)).plan(MONTH))
    capsys.readouterr()
    assert main(["results", "batch_old", "--database-url", db_url]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "exported 0 result(s)" in err and "`orchestrator prune` removed" in err
    assert main(["results", "batch_recent", "--database-url", db_url]) == 0
    assert "prune" not in capsys.readouterr().err


def test_results_of_selected_batches_say_which_were_pruned(
    database: Database, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    now = utcnow()
    seed_batch(database, "batch_old", now=now, ended_at=now - timedelta(days=40), results=120)
    seed_batch(database, "batch_recent", now=now, ended_at=now - timedelta(days=3), results=50)
    Pruner(RetentionStore(database)).prune(Pruner(RetentionStore(database)).plan(MONTH))
    capsys.readouterr()
    # as for one batch (test_results_of_a_pruned_batch_say_so): exported, with a note,
    # and --complete-only does not refuse (the harvest was complete)
    selected = ["results", "--status", "cancelled", "--complete-only", "-o", "jsonl"]
    assert main([*selected, "--database-url", db_url]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 50
    assert "exported 50 result(s) of 2 batch(es)" in err
    assert "`orchestrator prune` removed the results of batch_old" in err
    assert "batch_recent" not in err


def test_webhook_deliveries_older_than_the_cut_off_go_too(database: Database) -> None:
    """`webhook_events` grew without end: only a redelivery (days) and whether events
    flow (minutes) read them."""
    now = utcnow()
    with database.transaction() as session:
        for n, age in enumerate((timedelta(days=40), timedelta(days=31), timedelta(days=2))):
            session.add(
                WebhookEvent(
                    webhook_id=f"msg_{n}",
                    received_at=now - age,
                    event_id=f"evt_{n}",
                    event_type="batch.completed",
                    batch_id=None,
                    outcome="ignored",
                )
            )
    pruner = Pruner(RetentionStore(database, chunk_rows=1))
    plan = pruner.plan(MONTH)
    assert (plan.counts.batches, plan.counts.webhook_events) == (0, 2)
    assert pruner.prune(plan).webhook_events == 2
    with database.transaction() as session:
        assert list(session.scalars(select(WebhookEvent.webhook_id))) == ["msg_2"]

"""Issue #14: one selector language and one output scheme on every listing command.

Each test here failed on the code before the selector (commit 5d214ae): filters that
differed per command, `--limit 0` refused, `"status": null` in JSON, one results column.
"""

from __future__ import annotations

import io
import sys
from datetime import timedelta

import pytest

from orchestrator.clock import utcnow
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database

from . import fleet as f
from .conftest import Run, as_json

WITH_RESULTS = {f.TOO_LATE, f.CANCELLED, f.EXPIRED}
SELECTIONS = [
    (["--status", "failed,expired"], {f.FAILED, f.EXPIRED}),
    (["--newer-than", "1h"], {f.FAILED, f.VALIDATING, f.UNOBSERVED}),
    (["--created-after", "1h", "--created-before", "10m"], {f.FAILED}),
    (["--older-than", "4h"], {f.TOO_LATE, f.EXPIRED}),
    (["--cancel", "none"], {f.FAILED, f.VALIDATING, f.UNOBSERVED, f.EXPIRED}),
    (["--cancel", "pending,accepted"], {f.IN_PROGRESS, f.SLOW_CANCEL}),
    (["--outcome", "too_late"], {f.TOO_LATE}),
    (["--overdue"], {f.SLOW_CANCEL}),
    (["--endpoint", "/v1/embeddings"], {f.VALIDATING}),
    (["--model", "gpt-4o-mini", "--metadata", "team=search"], {f.IN_PROGRESS, f.SLOW_CANCEL}),
]


@pytest.mark.parametrize(("flags", "expected"), SELECTIONS)
def test_one_selector_means_the_same_batches_to_status_and_cancel(
    ask: Run, flags: list[str], expected: set[str]
) -> None:
    code, out, _ = ask("status", "-o", "ids", *flags)
    assert code == 0
    assert set(out.split()) == expected
    code, out, _ = ask("cancel", "--dry-run", "--json", *flags)
    assert code == 0
    plan = as_json(out)
    assert {p["batch_id"] for p in plan["to_cancel"] + plan["skipped"]} == expected
    code, out, _ = ask("forget", "--dry-run", "--json", *flags)
    assert code == 0
    assert {p["batch_id"] for p in as_json(out)["to_forget"]} == expected
    code, out, _ = ask("results", *flags)
    assert code == 0
    exported = {as_json(line)["batch_id"] for line in out.splitlines()}
    assert exported == expected & WITH_RESULTS


def test_results_by_selection_exports_every_chosen_batch_led_by_its_id(ask: Run) -> None:
    code, out, err = ask("results", "--status", "completed,cancelled", "-o", "csv")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith('"batch_id","custom_id"')
    assert len(lines) == 1 + 3 + 5
    assert "exported 8 result(s) of 2 batch(es)" in err
    code, _, err = ask("results", f.CANCELLED, "--status", "cancelled")
    assert code == 2 and "not both" in err


def test_a_bulk_cancel_on_a_never_synced_table_says_where_it_looked(
    database: Database, run: Run
) -> None:
    code, out, _ = run("cancel", "--status", "in_progress", "--dry-run")
    assert code == 0
    assert "plan: cancel 0 batch(es)" in out
    assert "never been synced" in out and "orchestrator sync" in out
    code, out, err = run("status", "--status", "in_progress")
    assert "no batch matches" in out and "orchestrator sync" in err
    for command in (["forget", "--dry-run"], ["results"]):
        code, _, err = run(*command, "--status", "in_progress")
        assert code == 0 and "never been synced" in err, command


def test_the_plan_shows_age_model_and_metadata(ask: Run) -> None:
    code, out, _ = ask("cancel", "--metadata", "team=search", "--dry-run")
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("batch "))
    assert header.split()[:4] == ["batch", "status", "age", "in"]
    assert "model" in header and "metadata" in header
    (row,) = [line for line in out.splitlines() if line.startswith(f.IN_PROGRESS)]
    assert "2h00m" in row and "gpt-4o-mini" in row and '"team":"search"' in row


def test_in_status_counts_from_the_servers_timestamp_and_age_from_created(
    database: Database, run: Run
) -> None:
    now = utcnow()
    body = f.payload(
        "batch_adopted",
        "in_progress",
        created=now - timedelta(hours=5),
        in_progress_at=now - timedelta(hours=3),
    )
    f.observe(database, body, now)  # recorded just now, in progress for three hours
    _, out, _ = run("status", "--json")
    (row,) = as_json(out)["batches"]
    assert 3 * 3600 <= row["seconds_in_status"] < 3 * 3600 + 60
    assert 5 * 3600 <= row["age_seconds"] < 5 * 3600 + 60
    _, out, _ = run("status")
    header, line = out.splitlines()[:2]
    assert header.split()[3:6] == ["age", "in", "status"]
    assert line.split()[3:5] == ["5h00m", "3h00m"]


def test_answers_and_errors_are_counted_apart(ask: Run) -> None:
    _, out, _ = ask("status", "--json", "--status", "cancelled")
    (row,) = as_json(out)["batches"]
    assert (row["answers"], row["errors"], row["result_line_errors"]) == (2, 3, 1)
    _, out, _ = ask("status", "--status", "cancelled")
    header = out.splitlines()[1].split()  # after the pause
    assert "answers" in header and "errors" in header and "results" not in header


def test_json_names_the_status_as_the_table_does_and_carries_metadata(ask: Run) -> None:
    _, out, _ = ask("status", "--json")
    rows = {b["id"]: b for b in as_json(out)["batches"]}
    assert rows[f.UNOBSERVED]["status"] == "unobserved"
    assert rows[f.IN_PROGRESS]["metadata"] == {"team": "search", "run": "nightly"}
    _, out_o, _ = ask("status", "-o", "json")
    assert as_json(out_o)["matching"] == as_json(out)["matching"]


def test_jsonl_is_one_batch_a_line_and_wide_adds_model_and_metadata(ask: Run) -> None:
    _, out, _ = ask("status", "-o", "jsonl", "--status", "validating,failed")
    records = [as_json(line) for line in out.splitlines()]
    assert {r["id"] for r in records} == {f.VALIDATING, f.FAILED}
    _, out, _ = ask("status", "-o", "wide", "--status", "validating")
    header, line = out.splitlines()[1:3]  # after the pause
    assert "model" in header.split() and "metadata" in header.split()
    assert "text-embedding-3-small" in line and '"team":"ads"' in line


def test_ids_pipe_into_cancel(fleet: Database, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    _, ids, _ = run("status", "-o", "ids", "--status", "validating,unobserved")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(ids.encode())))
    code, out, _ = run("cancel", "-", "--json")
    assert code == 0
    assert set(as_json(out)["requested"]) == {f.VALIDATING, f.UNOBSERVED}


def test_machine_formats_have_no_default_limit_and_limit_0_is_all(
    database: Database, run: Run
) -> None:
    BatchStore(database).track([f"batch_n{n:03d}" for n in range(60)], now=utcnow(), source="t")
    _, out, _ = run("status", "--json")
    assert as_json(out)["shown"] == 60
    assert len(run("status", "-o", "ids")[1].split()) == 60
    _, out, _ = run("status")
    assert "showing 50, 10 more" in out
    _, out, _ = run("status", "--limit", "0")
    assert len([line for line in out.splitlines() if line.startswith("batch_n")]) == 60
    assert len(run("status", "-o", "ids", "--limit", "5")[1].split()) == 5


def test_states_that_need_a_person_are_in_colour_and_no_color_means_none(
    ask: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR")
    _, out, _ = ask("status")
    (slow,) = [line for line in out.splitlines() if f.SLOW_CANCEL in line]
    assert "\x1b[1;31mOVERDUE" in slow
    assert out.splitlines()[0].startswith("\x1b[1;31mSENDING PAUSED")
    monkeypatch.setenv("NO_COLOR", "1")
    _, out, _ = ask("status")
    assert "\x1b[" not in out  # no colour, and no bold either


def test_an_outcome_and_an_id_beginning_match_with_their_case_on_both_backends(ask: Run) -> None:
    # Before: LIKE, which ignores case on SQLite only, so TOO_LATE matched there.
    code, out, _ = ask("status", "-o", "ids", "--outcome", "TOO_LATE")
    assert (code, out.split()) == (0, [])
    code, out, _ = ask("status", "-o", "ids", "--outcome", "too_late")
    assert (code, out.split()) == (0, [f.TOO_LATE])
    code, _, err = ask("show", "BATCH_TOOL")
    assert code == 4, err
    code, out, _ = ask("show", "batch_tool", "-o", "json")
    assert code == 0
    assert as_json(out)["batch"]["id"] == f.TOO_LATE

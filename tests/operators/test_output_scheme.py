"""Issue #14, "one output scheme on every listing command": `-o/--output FORMAT` means
the format on every command that prints (`--json` is `-o json`), `ids` where a command
lists batches, machine formats have no default limit, and the spellings retired on the
way (`results --format`, `results --output PATH`, `status --since`) are refused naming
what replaced them. Each test fails on the code before (cancel, track and forget had
table|json at most; results had --format and an --output that was a path)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from datetime import datetime
from pathlib import Path

import pytest

from orchestrator.cli.main import _subcommands, build_parser
from orchestrator.db.database import Database

from . import fleet as f
from .conftest import Run
from .test_bulk_cancel import Terminal


def _leaves() -> list[argparse.ArgumentParser]:
    return [p for p in _subcommands(build_parser()) if not _subcommands(p)]


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def test_o_is_the_format_on_every_command_that_prints_and_json_is_o_json() -> None:
    printing = 0
    for parser in _leaves():
        o, output, json_flag = (_option(parser, x) for x in ("-o", "--output", "--json"))
        assert output is o, f"{parser.prog}: --output is not -o"  # never a path
        if json_flag is None:
            continue
        printing += 1
        assert o is not None, f"{parser.prog} has --json but no -o"
        assert "json" in getattr(o.type, "choices", ()), parser.prog  # cli/output.output_format
        assert json_flag.dest == o.dest and json_flag.const == "json", parser.prog
        shown = parser.format_help()
        assert "--format" not in shown.replace("--log-format", ""), parser.prog
    assert printing >= 16  # status, show, cancel, track, forget, results, sync, prune, ...


def test_every_command_that_lists_batches_has_ids_and_jsonl() -> None:
    by_name = {p.prog.removeprefix("orchestrator "): p for p in _leaves()}
    for name in ("status", "cancel", "track", "forget"):
        o = _option(by_name[name], "-o")
        assert o is not None, name
        assert {"table", "json", "jsonl", "ids"} <= set(getattr(o.type, "choices", ())), name


def _lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))


def test_a_bulk_cancel_plan_as_ids_pipes_into_cancel(
    fleet: Database, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = ["cancel", "--status", "in_progress,validating", "--dry-run"]
    code, out, _ = run(*chosen, "-o", "jsonl")
    assert code == 0
    results = {r["batch_id"]: r["result"] for r in _lines(out)}
    assert results == {f.VALIDATING: "to_cancel", f.IN_PROGRESS: "skipped"}  # pending already
    code, ids, _ = run(*chosen, "-o", "ids")
    assert (code, ids) == (0, f"{f.VALIDATING}\n")  # what would be cancelled, not the skipped
    _stdin(monkeypatch, ids)
    code, out, err = run("cancel", "-", "-o", "jsonl")
    assert code == 0, err
    assert _lines(out) == [
        {"batch_id": f.VALIDATING, "result": "requested", "closed_at_once": None}
    ]
    code, out, _ = run("cancel", f.VALIDATING, f.IN_PROGRESS, "-o", "ids")
    assert (code, sorted(out.split())) == (0, sorted([f.VALIDATING, f.IN_PROGRESS]))


def test_withdraw_track_and_forget_write_one_record_a_batch(fleet: Database, run: Run) -> None:
    run("cancel", f.VALIDATING)
    code, out, _ = run("cancel", "--withdraw", f.VALIDATING, f.IN_PROGRESS, "-o", "jsonl")
    assert code == 1  # one request was kept: it went out already
    records = {r["batch_id"]: r for r in _lines(out)}
    assert records[f.VALIDATING]["result"] == "withdrawn"
    assert records[f.IN_PROGRESS]["result"] == "kept" and records[f.IN_PROGRESS]["why"]

    code, out, _ = run("track", f.UNOBSERVED, "batch_newone", "-o", "jsonl")
    assert code == 0
    assert {r["batch_id"]: r["result"] for r in _lines(out)} == {
        f.UNOBSERVED: "already_tracked",
        "batch_newone": "tracked",
    }
    code, out, _ = run("track", "batch_newone", "-o", "ids")
    assert (code, out) == (0, "batch_newone\n")

    code, out, _ = run("forget", "batch_newone", f.UNOBSERVED, "--dry-run", "-o", "ids")
    assert (code, out) == (0, f"batch_newone\n{f.UNOBSERVED}\n")
    code, out, _ = run("forget", "batch_newone", "--yes", "-o", "jsonl")
    assert (code, _lines(out)) == (0, [{"batch_id": "batch_newone", "result": "forgotten"}])


MANY = "batch_manyresults"


def test_results_formats_agree_and_only_the_table_has_a_default_limit(
    database: Database, fleet_now: datetime, run: Run
) -> None:
    f.observe(database, f.payload(MANY, "completed", created=fleet_now), fleet_now)
    f._results(database, MANY, output=60, errors=0, unreadable=0, now=fleet_now)
    code, jsonl, _ = run("results", MANY)  # jsonl, the default: every result
    assert code == 0 and len(_lines(jsonl)) == 60
    code, document, _ = run("results", MANY, "--json")
    assert code == 0 and json.loads(document) == {"results": _lines(jsonl)}
    assert run("results", MANY, "-o", "json")[1] == document
    code, out, _ = run("results", MANY, "-o", "csv")
    assert code == 0 and len(list(csv.DictReader(io.StringIO(out, newline="")))) == 60
    code, table, err = run("results", MANY, "-o", "table")
    assert code == 0
    assert "req-050" in table and "req-051" not in table  # 50 for a person
    assert "there are more: --limit 0 shows all" in err
    code, table, err = run("results", MANY, "-o", "table", "--limit", "0")
    assert "req-060" in table and "there are more" not in err
    code, out, _ = run("results", MANY, "--limit", "3")
    assert [r["custom_id"] for r in _lines(out)] == ["req-001", "req-002", "req-003"]


def test_retired_spellings_are_refused_naming_the_new_one(
    ask: Run, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cases = [
        (["results", f.CANCELLED, "--format", "csv"], ["--format is gone", "-o csv"]),
        (["results", f.CANCELLED, "--output", "out.csv"], ["not an output format", "--to out.csv"]),
        (["status", "--since", "2h"], ["--since is gone", "--created-after"]),
    ]
    for argv, said in cases:
        with pytest.raises(SystemExit) as exited:
            ask(*argv)
        out, err = capsys.readouterr()
        assert (exited.value.code, out) == (2, ""), argv
        assert all(s in err for s in said), (argv, err)
    assert list(tmp_path.iterdir()) == []  # no file written under the old meaning


def test_reports_take_o_json_as_they_take_json(ask: Run) -> None:
    for argv in (["cleanup", "--dry-run"], ["config", "show"], ["db", "current"]):
        code, by_o, _ = ask(*argv, "-o", "json")
        assert code == 0, argv
        assert ask(*argv, "--json")[1] == by_o
        json.loads(by_o)


def test_a_plan_to_confirm_goes_to_stderr_in_the_machine_formats(
    fleet: Database, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stdout holds only what a program reads, even when a person is asked first."""
    monkeypatch.setattr(sys, "stdin", Terminal("yes\n"))
    code, out, err = run("cancel", "--status", "unobserved", "-o", "ids")
    assert (code, out) == (0, f"{f.UNOBSERVED}\n")
    assert "to cancel (1)" in err and "type yes" in err
    monkeypatch.setattr(sys, "stdin", Terminal("yes\n"))
    code, out, err = run("forget", "--status", "unobserved", "-o", "jsonl")
    assert (code, _lines(out)) == (0, [{"batch_id": f.UNOBSERVED, "result": "forgotten"}])
    assert "to forget (1)" in err

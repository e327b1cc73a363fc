"""`orchestrator results`: JSON lines and CSV, by kind, to stdout or a file, page by page."""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from orchestrator.db.database import Database
from orchestrator.db.models import BatchResult, ResultFile
from orchestrator.db.queries import OperatorQueries
from orchestrator.errors import ConfigError

from . import fleet as f
from .conftest import Fleet, Run


def test_jsonl_has_every_result_in_custom_id_order(ask: Run) -> None:
    code, out, err = ask("results", f.CANCELLED)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["custom_id"] for r in rows] == [f"req-{n:03d}" for n in range(1, 6)]
    assert [r["file_kind"] for r in rows] == ["output"] * 2 + ["error"] * 3
    assert rows[0]["body"] == {"choices": [{"message": {"content": "answer 1"}}]}
    assert rows[0]["status_code"] == 200 and rows[0]["request_id"] == "req_line1"
    assert rows[4]["error_code"] == "batch_cancelled" and rows[4]["body"] is None
    assert f"exported 5 result(s) of {f.CANCELLED} to stdout" in err
    assert "note:" not in err  # harvested in full


def test_kind_narrows_to_one_file(ask: Run) -> None:
    _, out, _ = ask("results", f.CANCELLED, "--kind", "error")
    assert {json.loads(line)["file_kind"] for line in out.splitlines()} == {"error"}
    assert len(out.splitlines()) == 3


def test_csv_to_a_file_appears_only_when_complete(ask: Run, tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    exports.mkdir()
    target = exports / "out.csv"
    code, out, err = ask("results", f.CANCELLED, "-o", "csv", "--to", str(target))
    assert (code, out) == (0, "")
    assert str(target) in err
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert len(rows) == 5
    assert json.loads(rows[0]["body"])["choices"][0]["message"]["content"] == "answer 1"
    assert rows[2]["error_code"] == "batch_cancelled" and rows[2]["status_code"] == ""
    assert list(exports.iterdir()) == [target]  # no partial file left behind


def test_a_batch_not_harvested_yet_exports_what_there_is_and_says_so(ask: Run) -> None:
    code, out, err = ask("results", f.IN_PROGRESS)
    assert (code, out) == (0, "")
    assert "harvest is waiting" in err and "(0 of 200 requests)" in err


def test_complete_only_refuses_a_partial_batch_and_exports_a_done_one(ask: Run) -> None:
    code, out, err = ask("results", f.IN_PROGRESS, "--complete-only")
    assert (code, out) == (1, "")
    assert "harvest is waiting" in err and "--complete-only: nothing exported" in err
    code, out, _ = ask("results", f.CANCELLED, "--complete-only")
    assert code == 0 and len(out.splitlines()) == 5


def test_unknown_batch_exits_4(ask: Run) -> None:
    code, out, err = ask("results", "batch_nosuch")
    assert (code, out) == (4, "")
    assert "batch_nosuch is not tracked here" in err


def test_pages_walk_the_whole_batch(shared_fleet: Fleet) -> None:
    queries = OperatorQueries(shared_fleet.db)
    paged = [r.custom_id for r in queries.iter_results(f.CANCELLED, page_rows=2)]
    assert paged == [f"req-{n:03d}" for n in range(1, 6)]
    exact = [r.custom_id for r in queries.iter_results(f.TOO_LATE, page_rows=3)]
    assert exact == ["req-001", "req-002", "req-003"]


def test_an_unwritable_output_is_a_usage_error(ask: Run, tmp_path: Path) -> None:
    code, _, err = ask("results", f.CANCELLED, "--to", str(tmp_path / "no" / "such.jsonl"))
    assert code == 2
    assert "--to" in err


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_empty_export_is_still_well_formed(ask: Run, fmt: str) -> None:
    _, out, _ = ask("results", f.FAILED, "-o", fmt)
    header = ",".join(f'"{name}"' for name in _csv_header())  # every cell quoted
    assert out == ("" if fmt == "jsonl" else header + "\r\n")


def _csv_header() -> list[str]:
    from orchestrator.cli.result_writers import CSV_COLUMNS

    return list(CSV_COLUMNS)


# --- text from outside in the export (docs/bad-input.md) --------------------------------

FORMULAS = ("=1+1", "+SUM(1,2)", "@A1", "-2+3", "\t=1", "\r=1", "\uff1d1+1")


def _formula_results(db: Database, now: datetime) -> None:
    """A harvested batch whose custom ids and error messages are spreadsheet formulas."""
    f.observe(db, f.payload(FORMULA_BATCH, "completed", created=now), now)
    with db.transaction() as session:
        session.add(
            ResultFile(file_id="file-formulas", batch_id=FORMULA_BATCH, kind="error", state="done")
        )
        for n, text in enumerate(FORMULAS, 1):
            session.add(
                BatchResult(
                    batch_id=FORMULA_BATCH,
                    custom_id=text,
                    line_id=f"line_{n}",
                    file_id="file-formulas",
                    file_kind="error",
                    line_number=n,
                    error_code="bad",
                    error_message=text,
                )
            )


FORMULA_BATCH = "batch_formulas"


def test_csv_cells_a_spreadsheet_would_run_are_quoted_text(
    database: Database, fleet_now: datetime, run: Run
) -> None:
    _formula_results(database, fleet_now)
    code, out, _ = run("results", FORMULA_BATCH, "-o", "csv")
    assert code == 0
    assert all(line.startswith('"') for line in out.split("\r\n")[:-1])  # every cell quoted
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    assert sorted(r["custom_id"] for r in rows) == sorted(f"'{t}" for t in FORMULAS)
    assert sorted(r["error_message"] for r in rows) == sorted(f"'{t}" for t in FORMULAS)
    code, out, _ = run("results", FORMULA_BATCH)  # JSON lines: exactly as stored
    assert sorted(json.loads(line)["custom_id"] for line in out.splitlines()) == sorted(FORMULAS)


def test_output_never_follows_a_planted_partial_link(ask: Run, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out.jsonl"
    for planted in (f".{target.name}.partial", f"{target.name}.partial"):
        (tmp_path / planted).symlink_to(victim)
    code, _, err = ask("results", f.CANCELLED, "--to", str(target))
    assert code == 0, err
    assert victim.read_text() == "precious"
    assert len(target.read_text().splitlines()) == 5
    assert not target.is_symlink()


def test_output_does_not_replace_a_file_without_force(ask: Run, tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("yesterday's export")
    code, out, err = ask("results", f.CANCELLED, "--to", str(target))
    assert (code, out) == (2, "")
    assert str(target) in err and "--force" in err
    assert target.read_text() == "yesterday's export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # nothing left over
    code, _, err = ask("results", f.CANCELLED, "--to", str(target), "--force")
    assert code == 0, err
    assert len(target.read_text().splitlines()) == 5


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory", "device"])
def test_output_refuses_what_is_not_a_regular_file_even_with_force(
    ask: Run, tmp_path: Path, kind: str
) -> None:
    target = tmp_path / "out"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink":
        (tmp_path / "real.txt").write_text("kept")
        target.symlink_to(tmp_path / "real.txt")
    elif kind == "directory":
        target.mkdir()
    else:
        target = Path("/dev/null")
    code, _, err = ask("results", f.CANCELLED, "--to", str(target), "--force")
    assert code == 2
    assert str(target) in err and "refusing" in err
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    still = {
        "fifo": target.is_fifo,
        "symlink": target.is_symlink,
        "directory": target.is_dir,
        "device": target.is_char_device,
    }
    assert still[kind]()
    if kind == "symlink":
        assert (tmp_path / "real.txt").read_text() == "kept"


def test_output_dash_is_stdout(ask: Run, tmp_path: Path) -> None:
    code, out, err = ask("results", f.CANCELLED, "--to", "-")
    assert code == 0 and len(out.splitlines()) == 5
    assert "to stdout" in err


def test_a_file_that_appears_during_the_export_is_not_replaced(tmp_path: Path) -> None:
    from orchestrator.cli.results_commands import _destination

    target = tmp_path / "out.jsonl"
    with pytest.raises(ConfigError, match="already exists"), _destination(str(target)) as out:
        out.write("the export\n")
        target.write_text("someone else's file")  # appears while we write
    assert target.read_text() == "someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]

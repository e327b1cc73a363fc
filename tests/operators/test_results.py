"""`orchestrator results`: JSON lines and CSV, by kind, to stdout or a file, page by page."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from orchestrator.db.queries import OperatorQueries

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
    code, out, err = ask("results", f.CANCELLED, "--format", "csv", "--output", str(target))
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
    code, _, err = ask("results", f.CANCELLED, "--output", str(tmp_path / "no" / "such.jsonl"))
    assert code == 2
    assert "--output" in err


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_empty_export_is_still_well_formed(ask: Run, fmt: str) -> None:
    _, out, _ = ask("results", f.FAILED, "--format", fmt)
    assert out == ("" if fmt == "jsonl" else ",".join(_csv_header()) + "\r\n")


def _csv_header() -> list[str]:
    from orchestrator.cli.results_commands import CSV_COLUMNS

    return list(CSV_COLUMNS)

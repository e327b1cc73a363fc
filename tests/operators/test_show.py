"""`orchestrator show BATCH_ID`: every field, the cancel and its attempts, history, files."""

from __future__ import annotations

import pytest

from . import fleet as f
from .conftest import Run, as_json


def test_json_holds_every_field_the_cancel_its_attempts_history_and_files(ask: Run) -> None:
    code, out, _ = ask("show", f.CANCELLED, "--json")
    assert code == 0
    data = as_json(out)
    batch = data["batch"]
    for name in ("created_at", "cancelling_at", "cancelled_at", "expires_at", "tracked_at"):
        assert batch[name] is not None, name
    assert batch["status"] == "cancelled" and batch["results_stored"] == 5
    assert "metadata" in batch and "lease_owner" in batch  # every column, by its SQL name
    request = data["cancel_request"]
    assert (request["requested_by"], request["reason"]) == ("alice", "test run")
    assert (request["state"], request["outcome"]) == ("closed", "cancelled")
    kinds = [e["kind"] for e in data["events"]]
    assert kinds == ["status", "cancel_requested", "status", "status", "cancel_closed"]
    assert data["results_by_kind"] == {"output": 2, "error": 3}
    assert data["unreadable_lines"] == 1
    files = {file["kind"]: file for file in data["files"]}
    assert files["output"]["malformed"] == 1 and files["output"]["sha256"] == "ab" * 32
    assert files["error"]["bytes"] == 1200 and files["error"]["state"] == "done"
    assert data["overdue"] is False


def test_json_lists_each_cancel_attempt(ask: Run) -> None:
    _, out, _ = ask("show", f.IN_PROGRESS, "--json")
    (attempt,) = as_json(out)["attempts"]
    assert attempt["http_status"] == 429 and attempt["request_id"] == "req_rate1"
    assert attempt["outcome"] == "retry" and attempt["worker"] == "worker-1"


def test_the_human_view_has_headline_sections_and_history(ask: Run) -> None:
    code, out, _ = ask("show", f.SLOW_CANCEL)
    assert code == 0
    headline = out.splitlines()[0]
    assert headline.startswith(f"{f.SLOW_CANCEL}: cancelling, created 1h30m ago")
    assert "OVERDUE since" in headline
    assert "cancelling for 20m" in out
    for section in ("cancel ", "cancel attempts", "results     none kept yet", "history"):
        assert section in out
    assert "by bob (budget)" in out and "by bob: budget" in out
    assert '{"team":"search"}' in out  # JSON columns read as JSON
    _, verbose, _ = ask("show", f.SLOW_CANCEL, "--verbose")
    assert "cancel request" in verbose and "req_ok1" in verbose


def test_a_batch_without_cancel_or_results_says_so(ask: Run) -> None:
    code, out, _ = ask("show", f.UNOBSERVED)
    assert code == 0
    assert "unobserved for 3m" in out and "cancel      not requested" in out


def test_an_unknown_batch_exits_4_with_what_to_do(ask: Run) -> None:
    code, out, err = ask("show", "batch_nosuch")
    assert (code, out) == (4, "")
    assert "batch_nosuch is not tracked here" in err and "orchestrator sync" in err


@pytest.mark.parametrize("command", ["show", "results"])
def test_a_malformed_id_is_a_usage_error(ask: Run, command: str) -> None:
    code, _, err = ask(command, "batch/../x")
    assert code == 2
    assert "is not a valid batch id" in err


@pytest.mark.parametrize("name", ["batch_slowc", "batch_slowc…", " batch_slowcancel "])
def test_a_unique_beginning_of_an_id_names_the_batch(ask: Run, name: str) -> None:
    """Tables cut long ids short (`batch_1b855b2e…`): pasting that back works."""
    code, out, _ = ask("show", name, "--json")
    assert code == 0
    assert as_json(out)["batch"]["id"] == f.SLOW_CANCEL


def test_a_beginning_shared_by_several_ids_lists_them_and_exits_4(ask: Run) -> None:
    code, out, err = ask("show", "batch_")
    assert (code, out) == (4, "")
    assert "batch_ begins more than one tracked batch id (" in err
    assert f.IN_PROGRESS in err and ", ...)" in err and "give more of the id" in err


def test_a_beginning_matches_case_and_underscores_exactly(ask: Run) -> None:
    # SQLite's LIKE ignores case and LIKE's `_` matches any character: neither applies.
    assert ask("show", "BATCH_SLOWC")[0] == 4
    assert ask("show", "batch_abc1_3")[0] == 4  # as a LIKE pattern it matches batch_abc123


def test_results_take_a_unique_beginning_too(ask: Run) -> None:
    code, out, err = ask("results", "batch_cancelled")
    assert code == 0
    assert len(out.splitlines()) == 5 and f"of {f.CANCELLED} to stdout" in err

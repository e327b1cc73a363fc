"""The clean-up and retention rules (core/cleanup.py), case by case."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.core.cleanup import BatchFiles, FileKind, StoredFile, deletable, may_prune

DONE = StoredFile("done", lines=10, sha256="ab" * 32, lines_committed=10)
HARVESTED = BatchFiles(
    batch_id="batch_a",
    status="cancelled",
    harvest_state="done",
    output_file_id="file-out",
    error_file_id="file-err",
    input_file_id="file-in",
)
STORED = {("batch_a", "file-out"): DONE, ("batch_a", "file-err"): DONE}
Stored = dict[tuple[str, str], StoredFile]


def files(batch: BatchFiles = HARVESTED, stored: Stored = STORED) -> set[str]:
    found = deletable(batch, stored, result_files=True, input_file=True)
    return {file_id for _, file_id in found}


def test_a_verified_harvest_lets_every_file_go() -> None:
    assert files() == {"file-out", "file-err", "file-in"}
    only_results = deletable(HARVESTED, STORED, result_files=True, input_file=False)
    assert only_results == [(FileKind.OUTPUT, "file-out"), (FileKind.ERROR, "file-err")]
    only_input = deletable(HARVESTED, STORED, result_files=False, input_file=True)
    assert only_input == [(FileKind.INPUT, "file-in")]


@pytest.mark.parametrize("harvest", ["waiting", "pending", "retrying", "missing"])
def test_nothing_goes_unless_the_harvest_is_done(harvest: str) -> None:
    assert files(replace(HARVESTED, harvest_state=harvest)) == set()


@pytest.mark.parametrize("status", [None, "in_progress", "cancelling", "finalizing", "new_one"])
def test_nothing_goes_before_the_batch_is_terminal(status: str | None) -> None:
    assert files(replace(HARVESTED, status=status)) == set()


@pytest.mark.parametrize(
    "stored",
    [
        {},  # no row for the error file
        {("batch_a", "file-err"): replace(DONE, state="pending")},
        {("batch_a", "file-err"): replace(DONE, state="missing")},
        {("batch_a", "file-err"): replace(DONE, lines=None)},
        {("batch_a", "file-err"): replace(DONE, sha256=None)},
        {("batch_a", "file-err"): replace(DONE, lines_committed=9)},
        {("batch_b", "file-err"): DONE},  # another batch's record of it is not ours
    ],
)
def test_one_file_not_stored_in_full_keeps_every_file(stored: Stored) -> None:
    assert files(stored={("batch_a", "file-out"): DONE, **stored}) == set()


def test_a_file_whose_download_did_not_vouch_for_its_end_keeps_every_file() -> None:
    """A body with no length, no chunked framing and no compressed stream, cut at a
    line's end, was stored ``done`` with the cut's line count and sha256: nothing is
    deleted on its word. A row stored before this was recorded (None) goes as before."""
    unchecked = {("batch_a", "file-out"): replace(DONE, end_checked=False)}
    assert files(stored={**STORED, **unchecked}) == set()
    checked = {key: replace(DONE, end_checked=True) for key in STORED}
    assert files(stored=checked) == {"file-out", "file-err", "file-in"}
    assert DONE.end_checked is None and files() == {"file-out", "file-err", "file-in"}


def test_a_batch_without_result_files_may_lose_only_its_input() -> None:
    empty = replace(HARVESTED, output_file_id=None, error_file_id="")
    assert files(empty, {}) == {"file-in"}


def test_a_shared_input_file_waits_for_every_batch_that_uses_it() -> None:
    other = replace(
        HARVESTED,
        batch_id="batch_b",
        output_file_id=None,
        error_file_id=None,
        harvest_state="pending",
    )
    sharers = {"file-in": [HARVESTED, other]}
    found = deletable(HARVESTED, STORED, result_files=True, input_file=True, sharers=sharers)
    assert {f for _, f in found} == {"file-out", "file-err"}


def test_a_shared_output_file_waits_for_every_batch_that_names_it() -> None:
    """A hostile server names one output file for two batches: it goes only when both
    harvests are verified, each by its own record of the file."""
    other = replace(HARVESTED, batch_id="batch_b", error_file_id=None, input_file_id=None)

    def found(stored: Stored, second: BatchFiles = other) -> set[str]:
        users = {"file-out": [HARVESTED, second]}
        return {
            f
            for _, f in deletable(
                HARVESTED, stored, result_files=True, input_file=False, sharers=users
            )
        }

    assert found(STORED, replace(other, harvest_state="pending")) == {"file-err"}
    assert found(STORED) == {"file-err"}  # batch_b's harvest says done, but its record is not
    both = {**STORED, ("batch_b", "file-out"): DONE}
    assert found(both) == {"file-out", "file-err"}


NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "harvest", "ended_days_ago", "prunable"),
    [
        ("completed", "done", 31, True),
        ("expired", "missing", 31, True),  # settled, even if a file was gone
        ("completed", "done", 29, False),  # not old enough
        ("completed", "retrying", 31, False),  # the harvest has not finished
        ("completed", "pending", 31, False),
        ("cancelling", "waiting", 31, False),
        (None, "waiting", 31, False),
    ],
)
def test_only_batches_that_ended_before_the_cutoff_are_pruned(
    status: str | None, harvest: str, ended_days_ago: int, prunable: bool
) -> None:
    cutoff = NOW - timedelta(days=30)
    harvested_at = NOW - timedelta(days=ended_days_ago)
    verdict = may_prune(
        status=status, harvest_state=harvest, harvested_at=harvested_at, cutoff=cutoff
    )
    assert verdict is prunable
    assert not may_prune(status=status, harvest_state=harvest, harvested_at=None, cutoff=cutoff)

"""Which of a batch's files may be deleted from the API, and which of our rows may go. Pure.

A file is deleted only once every line of the batch's result files is ours:
the batch is terminal, its harvest is ``done``, and each output and error file
it names is recorded in full (state ``done``, its line count and sha256 known,
the checkpoint at its last line, its end vouched for by the download). A harvest
that is pending, retrying or ``missing`` (a file was gone) deletes nothing: what
we hold is not the whole answer, and a person may still want the files that remain.

A file may be named by several batches: one input file serves many batches,
and a hostile or buggy server may give two batches the same output or error
file. A file goes only when every tracked batch that names it (in any role)
has a verified harvest, so the first harvest never takes lines the second has
not read yet.

Retention: a batch's result rows and events may be pruned once it has ended
(terminal, harvest settled as ``done`` or ``missing``) and ended before the
cut-off.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from orchestrator.core.harvest import FileState, HarvestState
from orchestrator.core.status import parse_status

__all__ = [
    "BatchFiles",
    "DeletionState",
    "FileKind",
    "StoredFile",
    "deletable",
    "harvest_verified",
    "may_prune",
]


class FileKind(StrEnum):
    OUTPUT = "output"
    ERROR = "error"
    INPUT = "input"


class DeletionState(StrEnum):
    PENDING = "pending"
    DONE = "done"  # deleted by us, or already gone (404)
    FAILED = "failed"  # refused in a way asking again will not change


@dataclass(frozen=True)
class StoredFile:
    """What ``result_files`` says about one file."""

    state: str
    lines: int | None
    sha256: str | None
    lines_committed: int
    # Did the download vouch for its end (``Download.end_checked``)? None: stored
    # before this was recorded.
    end_checked: bool | None = None


# The `tracked_by` of a batch we found rather than were asked to follow (BatchFiles.found).
FOUND_BY = ("sync", "webhook")


@dataclass(frozen=True)
class BatchFiles:
    """One batch as far as clean-up cares."""

    batch_id: str
    status: str | None
    harvest_state: str
    output_file_id: str | None
    error_file_id: str | None
    input_file_id: str | None
    # Found, not asked for: tracked by `sync` or adopted from a webhook. Such a batch
    # may be another system's, which may still want its files: none of them goes.
    found: bool = False

    def result_file_ids(self) -> list[tuple[FileKind, str]]:
        pairs = ((FileKind.OUTPUT, self.output_file_id), (FileKind.ERROR, self.error_file_id))
        return [(kind, file_id) for kind, file_id in pairs if file_id]

    def file_ids(self) -> set[str]:
        """Every file this batch names: output, error and input."""
        return {f for _, f in self.result_file_ids()} | (
            {self.input_file_id} if self.input_file_id else set()
        )


# ``result_files`` rows keyed by (batch id, file id): two batches may name one file.
Stored = Mapping[tuple[str, str], StoredFile]


def _stored_in_full(stored: StoredFile | None) -> bool:
    return (
        stored is not None
        and stored.state == FileState.DONE
        and stored.lines is not None
        and stored.sha256 is not None
        and stored.lines_committed == stored.lines
        # A body with no length and no chunked framing ends where the connection
        # closed: cut at a line's end it looks whole, and its line count
        # and sha256 are of the cut. Such a file is kept on the server (False). None
        # (stored before this was recorded) is judged as it was then: those rows
        # cannot be told apart, and holding them all back would keep every old file.
        and stored.end_checked is not False
    )


def harvest_verified(batch: BatchFiles, stored: Stored) -> bool:
    """Is every line of every result file of ``batch`` recorded, and checked?"""
    status = parse_status(batch.status) if batch.status else None
    if status is None or not status.is_terminal or batch.harvest_state != HarvestState.DONE:
        return False
    return all(
        _stored_in_full(stored.get((batch.batch_id, file_id)))
        for _, file_id in batch.result_file_ids()
    )


def deletable(
    batch: BatchFiles,
    stored: Stored,
    *,
    result_files: bool,
    input_file: bool,
    sharers: Mapping[str, Iterable[BatchFiles]] | None = None,
    inputs_unknown: bool = False,
) -> list[tuple[FileKind, str]]:
    """The files of ``batch`` that may be deleted now (empty unless its harvest is verified).

    ``sharers`` maps a file id to every tracked batch naming that file (as input,
    output or error file); ``stored`` holds their ``result_files`` rows too. A
    file missing from ``sharers`` is taken to be named by ``batch`` alone.
    ``inputs_unknown``: some tracked batch that may still be running has no input
    file id yet (tracked, not observed): it may be using any input file, and the
    API needs a running batch's input file, so no input file goes.
    """
    if batch.found or not harvest_verified(batch, stored):
        return []
    kinds = [*(batch.result_file_ids() if result_files else [])]
    if input_file and batch.input_file_id and not inputs_unknown:
        kinds.append((FileKind.INPUT, batch.input_file_id))
    users = sharers or {}
    return [
        (kind, file_id)
        for kind, file_id in kinds
        if all(
            not other.found and harvest_verified(other, stored) for other in users.get(file_id, ())
        )
    ]


def may_prune(
    *, status: str | None, harvest_state: str, harvested_at: datetime | None, cutoff: datetime
) -> bool:
    """Has the batch ended (terminal, harvest settled) before ``cutoff``?"""
    parsed = parse_status(status) if status else None
    settled = harvest_state in (HarvestState.DONE, HarvestState.MISSING)
    return (
        parsed is not None
        and parsed.is_terminal
        and settled
        and harvested_at is not None
        and harvested_at < cutoff
    )

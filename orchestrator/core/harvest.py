"""Where the harvest of a batch's result files stands. Pure.

A batch's ``harvest_state``:

- ``waiting``: not terminal yet, nothing to fetch;
- ``pending``: terminal; files to download, or file ids still awaited;
- ``done``: every file stored (or the batch has no file at all);
- ``missing``: a file is gone (404): what it held cannot be had; needs a person;
- ``retrying``: a download kept failing; it will be tried again later.

A file's ``state`` in ``result_files``: ``pending`` (not fully stored yet),
``done`` or ``missing``.

The moves::

    waiting ──observe──▶ pending ──settle──▶ retrying ──settle──▶ done | missing
       │                    │                   ▲  └──┘ (still failing)
       │                    └───────────────────┼───settle──────▶ done | missing
       └──observe (terminal without a file)─────┴───────────────▶ done

``observe`` follows a successful poll (the poll plan says waiting, pending or
done); ``settle`` follows the downloads, from the files' states. A state never
moves back (``HarvestState.rank``). Each move takes a ``HarvestSnapshot`` and
``now`` and returns a ``HarvestPlan``: the columns to write, the events to record.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypedDict

from orchestrator.core.events import PlannedEvent

__all__ = [
    "NEEDS_ATTENTION",
    "FileFacts",
    "FileState",
    "HarvestColumns",
    "HarvestPlan",
    "HarvestSnapshot",
    "HarvestState",
    "after_files",
    "observe",
    "settle",
]

ERROR_CHARS = 2000


class HarvestState(StrEnum):
    WAITING = "waiting"
    PENDING = "pending"
    DONE = "done"
    MISSING = "missing"
    RETRYING = "retrying"

    @property
    def rank(self) -> int:
        """How far along: no move lowers it."""
        return _RANK[self]

    @property
    def is_final(self) -> bool:
        return self in (HarvestState.DONE, HarvestState.MISSING)


_RANK = {
    HarvestState.WAITING: 0,
    HarvestState.PENDING: 1,
    HarvestState.RETRYING: 2,
    HarvestState.DONE: 3,
    HarvestState.MISSING: 3,
}


class FileState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    MISSING = "missing"


NEEDS_ATTENTION: frozenset[HarvestState] = frozenset({HarvestState.MISSING, HarvestState.RETRYING})


def after_files(states: Iterable[FileState]) -> HarvestState:
    """The batch's harvest state once each known file was tried.

    A file still pending outranks a missing one: the pending one will be tried
    again, and only when it is done does the batch settle on ``missing``.
    """
    seen = set(states)
    if FileState.PENDING in seen:
        return HarvestState.RETRYING
    if FileState.MISSING in seen:
        return HarvestState.MISSING
    return HarvestState.DONE


class HarvestColumns(TypedDict, total=False):
    """``batches`` columns a harvest plan sets (a key left out is left unchanged)."""

    harvest_state: HarvestState
    harvested_at: datetime
    poll_failures: int
    last_error: str | None
    next_poll_at: datetime | None


@dataclass(frozen=True)
class HarvestSnapshot:
    """What the rules read of a batch, as it stands when the move is decided."""

    state: HarvestState
    status: str | None = None  # the batch's status, for the words of an event
    terminal_polls: int = 0
    poll_failures: int = 0
    status_changed_at: datetime | None = None
    results_stored: int = 0
    result_line_errors: int = 0


@dataclass(frozen=True)
class FileFacts:
    """One of the batch's known files; ``state`` None: no download began yet."""

    file_id: str
    kind: str  # output | error
    state: FileState | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class HarvestPlan:
    state: HarvestState  # the harvest state afterwards
    changes: HarvestColumns = field(default_factory=lambda: HarvestColumns())
    events: tuple[PlannedEvent, ...] = ()


def observe(batch: HarvestSnapshot, decided: HarvestState, now: datetime) -> HarvestPlan:
    """After a successful poll, whose plan decided ``decided`` (waiting, pending or done).

    Only a harvest not begun (waiting, pending) follows the poll: once files were
    tried, only ``settle`` moves it; and never back.
    """
    current = batch.state
    if current not in (HarvestState.WAITING, HarvestState.PENDING) or decided.rank < current.rank:
        return HarvestPlan(current)
    if decided is not HarvestState.DONE:
        return HarvestPlan(decided, HarvestColumns(harvest_state=decided))
    detail = f"{batch.status} with no output or error file after {batch.terminal_polls} poll(s)"
    return HarvestPlan(
        decided,
        HarvestColumns(harvest_state=decided, harvested_at=now),
        (PlannedEvent("harvested", detail),),
    )


def settle(
    batch: HarvestSnapshot, files: Sequence[FileFacts], now: datetime, retry_in: float
) -> HarvestPlan:
    """After the downloads: done, missing, or retrying in ``retry_in`` seconds.

    ``batch`` carries the sums of what its files stored; ``retry_in`` is the
    backoff the poll policy gives ``batch.poll_failures + 1`` failures.
    """
    state = after_files(f.state or FileState.PENDING for f in files)
    if state.rank < batch.state.rank:
        return HarvestPlan(batch.state)
    problems = "; ".join(
        f"{f.kind} file {f.file_id}: {f.last_error}"
        for f in files
        if f.state is not None and f.state is not FileState.DONE and f.last_error
    )
    if state is HarvestState.RETRYING:
        error = (problems or "download incomplete")[:ERROR_CHARS]
        changes = HarvestColumns(
            harvest_state=state,
            poll_failures=batch.poll_failures + 1,
            last_error=error,
            next_poll_at=now + timedelta(seconds=retry_in),
        )
        if batch.state is HarvestState.RETRYING:
            return HarvestPlan(state, changes)  # said once, when it began
        return HarvestPlan(state, changes, (PlannedEvent("harvest_retrying", error),))
    summary = (
        f"{batch.results_stored} result(s), {batch.result_line_errors} unreadable line(s) "
        f"from {len(files)} file(s)"
    )
    changes = HarvestColumns(
        harvest_state=state, next_poll_at=None, harvested_at=now, poll_failures=0, last_error=None
    )
    if state is HarvestState.DONE:
        return HarvestPlan(state, changes, (PlannedEvent("harvested", summary),))
    error = problems[:ERROR_CHARS] or "a result file is missing"
    changes["last_error"] = error
    return HarvestPlan(state, changes, (PlannedEvent("harvest_incomplete", f"{summary}; {error}"),))

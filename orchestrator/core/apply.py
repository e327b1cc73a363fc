"""Apply what the server says to what we stored, never going backwards.

The server is the source of truth, but observations can arrive late, out of
order, or from two processes at once. So:

- a status the machine can reach from ours is walked to, step by step, each
  step an event carrying the server's own timestamp for it;
- a status it cannot reach (completed -> in_progress) or does not know changes
  nothing and becomes an anomaly event, never a crash;
- each timestamp and each file id is set once and then kept;
- request counts only grow;
- a field the parser refused (`BatchObservation.anomalies`) is an anomaly event
  of its own, while the rest of the observation still applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from orchestrator.core.lifecycle import BatchLifecycle, IllegalMove, lifecycle
from orchestrator.core.observation import BatchObservation
from orchestrator.core.status import TIMESTAMP_FIELDS, BatchStatus


@dataclass(frozen=True)
class StoredBatch:
    """The part of a stored row that the rules read."""

    status: BatchStatus | None = None  # None: tracked but never observed
    timestamps: Mapping[str, datetime | None] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    request_counts: tuple[int, int, int] | None = None
    usage: Mapping[str, int | None] = field(default_factory=dict)  # USAGE_FIELDS


@dataclass(frozen=True)
class StatusChange:
    from_status: BatchStatus | None
    to_status: BatchStatus
    server_at: datetime | None


@dataclass(frozen=True)
class Anomaly:
    kind: str  # "unknown_status" | "illegal_move" | "refused_field" | "file_id_changed"
    detail: str
    observed_status: str


@dataclass(frozen=True)
class Applied:
    before: BatchStatus | None
    status: BatchStatus | None
    changes: dict[str, Any]
    status_changes: tuple[StatusChange, ...] = ()
    anomalies: tuple[Anomaly, ...] = ()

    @property
    def became_terminal(self) -> bool:
        was = self.before is not None and self.before.is_terminal
        return not was and self.status is not None and self.status.is_terminal


_DESCRIPTIVE = ("endpoint", "model", "input_file_id", "completion_window")


def apply_observation(
    stored: StoredBatch,
    observed: BatchObservation,
    machine: BatchLifecycle | None = None,
) -> Applied:
    machine = machine or lifecycle()
    refused = tuple(
        Anomaly("refused_field", text, observed.status_text) for text in observed.anomalies
    )
    applied = _apply(stored, observed, machine)
    if not refused:
        return applied
    return replace(applied, anomalies=refused + applied.anomalies)


def _apply(stored: StoredBatch, observed: BatchObservation, machine: BatchLifecycle) -> Applied:
    new = observed.status
    if new is None:
        return _refuse(
            stored,
            observed,
            "unknown_status",
            f"server reported undocumented status {observed.status_text!r}; kept "
            f"{_name(stored.status)}",
        )
    try:
        path = _path(machine, stored.status, new, observed.timestamps)
    except IllegalMove:
        return _refuse(
            stored,
            observed,
            "illegal_move",
            f"server reported {new.value} but no legal move leads there from "
            f"{_name(stored.status)}; kept {_name(stored.status)}",
        )
    changes = _field_changes(stored, observed)
    if path:
        changes["status"] = new.value
    steps: list[StatusChange] = []
    previous = stored.status
    for step in path:
        steps.append(StatusChange(previous, step, observed.timestamps.get(step.timestamp_field)))
        previous = step
    return Applied(stored.status, new, changes, tuple(steps), _file_ids_changed(stored, observed))


def _file_ids_changed(stored: StoredBatch, observed: BatchObservation) -> tuple[Anomaly, ...]:
    """A file id is set once: one the server names later instead is not harvested, and
    said so, for a person to look at (it was kept silently)."""
    return tuple(
        Anomaly(
            "file_id_changed",
            f"the server now names {kind} file {new} for this batch; kept {old} (its lines "
            f"are the ones harvested; {new} is not)",
            observed.status_text,
        )
        for kind, old, new in (
            ("output", stored.output_file_id, observed.output_file_id),
            ("error", stored.error_file_id, observed.error_file_id),
        )
        if old and new and new != old
    )


def _name(status: BatchStatus | None) -> str:
    return status.value if status else "(never observed)"


def _refuse(stored: StoredBatch, observed: BatchObservation, kind: str, detail: str) -> Applied:
    anomaly = Anomaly(kind, detail, observed.status_text)
    return Applied(stored.status, stored.status, {}, (), (anomaly,))


def _path(
    machine: BatchLifecycle,
    current: BatchStatus | None,
    new: BatchStatus,
    timestamps: Mapping[str, datetime | None],
) -> tuple[BatchStatus, ...]:
    if current is None:
        return (new,)  # first sight: we cannot know the road it took
    if current == new:
        return ()
    path = machine.best_path(current, new, timestamps)
    machine.walk(current, path)
    return path


def _field_changes(stored: StoredBatch, observed: BatchObservation) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name in TIMESTAMP_FIELDS:
        value = observed.timestamps.get(name)
        if value is not None and stored.timestamps.get(name) is None:
            changes[name] = value
    if observed.output_file_id and not stored.output_file_id:
        changes["output_file_id"] = observed.output_file_id
    if observed.error_file_id and not stored.error_file_id:
        changes["error_file_id"] = observed.error_file_id
    counts = _grown_counts(stored.request_counts, observed.request_counts)
    if counts is not None:
        total, completed, failed = counts
        changes.update(
            request_counts_total=total,
            request_counts_completed=completed,
            request_counts_failed=failed,
        )
    for name in _DESCRIPTIVE:
        value = getattr(observed, name)
        if value is not None:
            changes[name] = value
    changes.update(_grown_usage(stored.usage, observed.usage))
    if observed.metadata is not None:
        changes["metadata"] = observed.metadata
    if observed.errors is not None:
        changes["errors"] = observed.errors
    return changes


def _grown_usage(
    stored: Mapping[str, int | None], observed: Mapping[str, int | None]
) -> dict[str, int]:
    """Token counts that grew: like the request counts, a stale answer (a list page read
    before the GET just recorded) never lowers them."""
    grown: dict[str, int] = {}
    for name, value in observed.items():
        if value is not None:
            before = stored.get(name)
            if before is None or value > before:
                grown[name] = value
    return grown


def _grown_counts(
    stored: tuple[int, int, int] | None, observed: tuple[int, int, int] | None
) -> tuple[int, int, int] | None:
    if observed is None:
        return None
    if stored is None:
        return observed
    merged = tuple(max(a, b) for a, b in zip(stored, observed, strict=True))
    return None if merged == stored else (merged[0], merged[1], merged[2])

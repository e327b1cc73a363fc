"""Pure lifecycle math of one simulated batch.

A batch's status is never stored: it is a function of its creation time, its
``Scenario``, the time scale, whether and when a cancel was accepted, and ``now``.
Nothing here reads a clock or holds state, so every transition can be tested with
plain numbers (unix seconds as floats).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]
CancelOutcome = Literal["cancelled", "completed", "expired", "failed"]
UnrunCode = Literal["batch_cancelled", "batch_expired"]

TERMINAL: frozenset[str] = frozenset({"completed", "failed", "expired", "cancelled"})
CANCELLABLE: frozenset[str] = frozenset({"validating", "in_progress", "finalizing"})
CANCEL_OUTCOMES: frozenset[str] = frozenset({"cancelled", "completed", "expired", "failed"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """How one batch behaves. Durations are in scenario seconds (divided by the time scale)."""

    validating_s: float = 2.0
    fail_validation: bool = False
    running_s: float = 60.0
    finalizing_s: float = 2.0
    cancelling_s: float = 5.0
    cancel_outcome: CancelOutcome = "cancelled"
    expires_after_s: float = 86400.0
    failed_request_ratio: float = 0.1
    file_ids_lag_polls: int = 0
    empty_string_error_file: bool = False
    body_bytes: int = 200
    shuffle_output: bool = True

    def __post_init__(self) -> None:
        for name in ("validating_s", "running_s", "finalizing_s", "cancelling_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"scenario.{name} must be a finite number >= 0, got {value!r}")
        if not math.isfinite(self.expires_after_s) or self.expires_after_s <= 0:
            raise ValueError("scenario.expires_after_s must be > 0")
        if self.cancel_outcome not in CANCEL_OUTCOMES:
            raise ValueError(f"scenario.cancel_outcome must be one of {sorted(CANCEL_OUTCOMES)}")
        if not 0.0 <= self.failed_request_ratio <= 1.0:
            raise ValueError("scenario.failed_request_ratio must be within 0..1")
        if self.file_ids_lag_polls < 0 or self.body_bytes < 0:
            raise ValueError("scenario.file_ids_lag_polls and body_bytes must be >= 0")

    def with_overrides(self, overrides: Mapping[str, object]) -> Scenario:
        """A copy with the given fields replaced; names and types are checked (JSON friendly)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for name, value in overrides.items():
            if name not in fields:
                raise ValueError(f"unknown scenario field {name!r}")
            changes[name] = _coerce(name, getattr(self, name), value)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _coerce(name: str, current: object, value: object) -> object:
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"scenario.{name} must be a boolean")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"scenario.{name} must be an integer")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"scenario.{name} must be a number")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"scenario.{name} must be a string")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeline:
    """Everything the status of a batch depends on, apart from ``now``."""

    created_at: float
    total: int
    scenario: Scenario
    time_scale: float = 1.0
    cancel_at: float | None = None

    def _real(self, scenario_seconds: float) -> float:
        return scenario_seconds / self.time_scale

    @property
    def expires_at(self) -> float:
        return self.created_at + self._real(self.scenario.expires_after_s)

    @property
    def in_progress_at(self) -> float:
        return self.created_at + self._real(self.scenario.validating_s)

    @property
    def running(self) -> float:
        return self._real(self.scenario.running_s)

    @property
    def finalizing_at(self) -> float:
        return self.in_progress_at + self.running

    @property
    def completed_at(self) -> float:
        return self.finalizing_at + self._real(self.scenario.finalizing_s)

    def finished_at(self, index: int) -> float:
        """When request ``index`` finishes if nothing stops the batch."""
        return self.in_progress_at + self.running * (index + 1) / max(self.total, 1)

    def natural_end(self) -> tuple[Status, float]:
        """The terminal status and its time when no cancel interferes."""
        if self.scenario.fail_validation:
            if self.in_progress_at < self.expires_at:
                return "failed", self.in_progress_at
            return "expired", self.expires_at
        # Once every request ran, finalizing completes even past expires_at.
        if self.finalizing_at <= self.expires_at:
            return "completed", self.completed_at
        return "expired", self.expires_at

    def done_by(self, moment: float) -> int:
        """How many requests (indices 0..n-1) have finished by ``moment`` in a natural run."""
        if self.scenario.fail_validation or moment < self.in_progress_at:
            return 0
        if moment >= self.finalizing_at or self.running <= 0:
            return self.total
        return min(
            self.total, math.floor((moment - self.in_progress_at) * self.total / self.running)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase:
    """The observable state of a batch at one moment."""

    status: Status
    expires_at: float
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    expired_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None
    done: int = 0
    """Requests 0..done-1 have finished (each succeeded or failed on its own)."""
    unrun_code: UnrunCode | None = None
    """In a terminal phase: the error-file code of every request >= done (None: not in any file)."""
    counts_total: bool = True
    """False while validating and after a failed validation: request_counts.total is 0 then."""
    failure: Literal["validation", "cancel"] | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def ends_at(timeline: Timeline) -> float:
    """When the batch becomes terminal, as its timeline stands (a cancel moves it)."""
    if timeline.cancel_at is not None:
        return timeline.cancel_at + timeline.scenario.cancelling_s / timeline.time_scale
    return timeline.natural_end()[1]


def phase_at(timeline: Timeline, now: float) -> Phase:
    """The phase of the batch at ``now``."""
    cancel_at = timeline.cancel_at
    if cancel_at is not None and now >= cancel_at:
        return _cancel_phase(timeline, cancel_at, now)
    return natural_phase(timeline, now)


def natural_phase(timeline: Timeline, now: float) -> Phase:
    """The phase at ``now`` of a batch that was never cancelled."""
    end_status, end_at = timeline.natural_end()
    ip = timeline.in_progress_at
    fin = timeline.finalizing_at
    ran = not timeline.scenario.fail_validation and ip < end_at
    base = Phase(
        status="validating",
        expires_at=timeline.expires_at,
        in_progress_at=ip if ran and now >= ip else None,
        finalizing_at=fin if end_status == "completed" and now >= fin else None,
        counts_total=False,
    )
    if now >= end_at:
        return _natural_terminal(timeline, base, end_status, end_at)
    if now < ip:
        return base
    if now < fin:
        return dataclasses.replace(
            base, status="in_progress", done=timeline.done_by(now), counts_total=True
        )
    return dataclasses.replace(base, status="finalizing", done=timeline.total, counts_total=True)


def _natural_terminal(timeline: Timeline, base: Phase, status: Status, at: float) -> Phase:
    if status == "failed":
        return dataclasses.replace(base, status="failed", failed_at=at, failure="validation")
    if status == "completed":
        return dataclasses.replace(
            base, status="completed", completed_at=at, done=timeline.total, counts_total=True
        )
    return dataclasses.replace(
        base,
        status="expired",
        expired_at=at,
        done=timeline.done_by(at),
        unrun_code="batch_expired",
        counts_total=base.in_progress_at is not None,
    )


def _cancel_phase(timeline: Timeline, cancel_at: float, now: float) -> Phase:
    before = natural_phase(timeline, cancel_at)
    end_at = cancel_at + timeline.scenario.cancelling_s / timeline.time_scale
    cancelling = dataclasses.replace(before, status="cancelling", cancelling_at=cancel_at)
    if now < end_at:
        return cancelling
    outcome = timeline.scenario.cancel_outcome
    ended = dataclasses.replace(cancelling, counts_total=True)
    if outcome == "completed":
        return dataclasses.replace(
            ended,
            status="completed",
            completed_at=end_at,
            in_progress_at=cancel_at if before.in_progress_at is None else before.in_progress_at,
            finalizing_at=min(timeline.finalizing_at, end_at),
            done=timeline.total,
        )
    if outcome == "expired":
        return dataclasses.replace(
            ended, status="expired", expired_at=end_at, unrun_code="batch_expired"
        )
    if outcome == "failed":
        return dataclasses.replace(ended, status="failed", failed_at=end_at, failure="cancel")
    return dataclasses.replace(
        ended, status="cancelled", cancelled_at=end_at, unrun_code="batch_cancelled"
    )

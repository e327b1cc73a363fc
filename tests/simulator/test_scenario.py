"""The pure lifecycle: status as a function of times, without HTTP."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.simulator.scenario import Scenario, Timeline, natural_phase, phase_at

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def timeline(total: int = 100, scale: float = 1.0, **overrides: object) -> Timeline:
    return Timeline(
        created_at=T0, total=total, scenario=Scenario().with_overrides(overrides), time_scale=scale
    )


def test_natural_run_goes_through_every_phase() -> None:
    tl = timeline(validating_s=2, running_s=60, finalizing_s=3)
    start = phase_at(tl, T0)
    assert start.status == "validating"
    assert (start.done, start.counts_total, start.in_progress_at) == (0, False, None)

    running = phase_at(tl, T0 + 2 + 30)
    assert running.status == "in_progress"
    assert running.in_progress_at == T0 + 2
    assert running.done == 50
    assert phase_at(tl, T0 + 2 + 45).done == 75  # grows linearly with time

    finalizing = phase_at(tl, T0 + 62.5)
    assert (finalizing.status, finalizing.done, finalizing.finalizing_at) == (
        "finalizing",
        100,
        T0 + 62,
    )

    done = phase_at(tl, T0 + 65)
    assert done.status == "completed"
    assert done.terminal
    assert (done.completed_at, done.done, done.unrun_code) == (T0 + 65, 100, None)
    assert done.expires_at == T0 + 86400


def test_request_i_finishes_at_its_share_of_the_running_time() -> None:
    tl = timeline(total=4, validating_s=0, running_s=40)
    assert [tl.finished_at(i) - T0 for i in range(4)] == [10, 20, 30, 40]
    assert phase_at(tl, T0 + 9.99).done == 0
    assert phase_at(tl, T0 + 10).done == 1
    assert phase_at(tl, T0 + 39.99).done == 3


def test_time_scale_compresses_durations() -> None:
    tl = timeline(scale=600, running_s=600_000)  # would outlive the 24 h window
    assert tl.expires_at == T0 + 144
    assert phase_at(tl, T0 + 143).status == "in_progress"
    expired = phase_at(tl, T0 + 144)
    assert expired.status == "expired"
    assert expired.expired_at == T0 + 144


def test_expiry_keeps_finished_requests_and_marks_the_rest_expired() -> None:
    tl = timeline(total=10, validating_s=0, running_s=200, expires_after_s=100)
    phase = phase_at(tl, T0 + 150)
    assert phase.status == "expired"
    assert phase.done == 5
    assert phase.unrun_code == "batch_expired"
    assert phase.finalizing_at is None


def test_expiry_while_still_validating_never_ran_anything() -> None:
    phase = phase_at(timeline(validating_s=500, expires_after_s=100), T0 + 100)
    assert (phase.status, phase.done, phase.in_progress_at, phase.counts_total) == (
        "expired",
        0,
        None,
        False,
    )


def test_finalizing_past_expiry_still_completes() -> None:
    tl = timeline(validating_s=0, running_s=100, finalizing_s=50, expires_after_s=120)
    assert phase_at(tl, T0 + 130).status == "finalizing"
    assert phase_at(tl, T0 + 150).status == "completed"


def test_failed_validation() -> None:
    tl = timeline(fail_validation=True, validating_s=4)
    assert phase_at(tl, T0 + 3).status == "validating"
    failed = phase_at(tl, T0 + 4)
    assert (failed.status, failed.failed_at, failed.failure, failed.done) == (
        "failed",
        T0 + 4,
        "validation",
        0,
    )
    assert failed.in_progress_at is None


def cancelled_at(tl: Timeline, cancel_after: float) -> Timeline:
    return dataclasses.replace(tl, cancel_at=T0 + cancel_after)


def test_cancel_in_progress_freezes_progress_then_ends_cancelled() -> None:
    tl = cancelled_at(timeline(validating_s=0, running_s=100, cancelling_s=5), 30)
    assert phase_at(tl, T0 + 29).status == "in_progress"  # the cancel has not arrived yet
    cancelling = phase_at(tl, T0 + 34)
    assert (cancelling.status, cancelling.cancelling_at, cancelling.done) == (
        "cancelling",
        T0 + 30,
        30,
    )
    done = phase_at(tl, T0 + 35)
    assert (done.status, done.cancelled_at, done.done, done.unrun_code) == (
        "cancelled",
        T0 + 35,
        30,
        "batch_cancelled",
    )
    assert done.finalizing_at is None


def test_cancel_while_validating_runs_nothing() -> None:
    done = phase_at(cancelled_at(timeline(validating_s=10), 1), T0 + 100)
    assert (done.status, done.done, done.in_progress_at) == ("cancelled", 0, None)


def test_cancel_while_finalizing_keeps_every_result() -> None:
    tl = cancelled_at(timeline(validating_s=0, running_s=10, finalizing_s=10), 15)
    done = phase_at(tl, T0 + 100)
    assert (done.status, done.done, done.finalizing_at) == ("cancelled", 100, T0 + 10)


@pytest.mark.parametrize(
    ("outcome", "status", "done", "unrun"),
    [
        ("completed", "completed", 100, None),
        ("expired", "expired", 50, "batch_expired"),
        ("failed", "failed", 50, None),
    ],
)
def test_cancel_outcomes(outcome: str, status: str, done: int, unrun: str | None) -> None:
    tl = cancelled_at(timeline(validating_s=0, running_s=100, cancel_outcome=outcome), 50)
    assert phase_at(tl, T0 + 54).status == "cancelling"
    end = phase_at(tl, T0 + 55)
    assert (end.status, end.done, end.unrun_code) == (status, done, unrun)
    assert end.cancelling_at == T0 + 50


def test_long_cancelling_outlasts_ten_minutes() -> None:
    tl = cancelled_at(timeline(cancelling_s=3600), 10)
    assert phase_at(tl, T0 + 10 + 3599).status == "cancelling"
    assert phase_at(tl, T0 + 10 + 3600).status == "cancelled"


def test_natural_phase_ignores_a_cancel() -> None:
    tl = cancelled_at(timeline(), 10)
    assert natural_phase(tl, T0 + 20).status == "in_progress"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nope": 1}, "unknown scenario field"),
        ({"running_s": -1}, "running_s"),
        ({"running_s": "fast"}, "must be a number"),
        ({"fail_validation": 1}, "boolean"),
        ({"file_ids_lag_polls": 1.5}, "integer"),
        ({"cancel_outcome": "exploded"}, "cancel_outcome"),
        ({"failed_request_ratio": 2}, "failed_request_ratio"),
    ],
)
def test_bad_overrides_are_rejected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Scenario().with_overrides(overrides)


def test_overrides_accept_ints_for_floats() -> None:
    scenario = Scenario().with_overrides({"running_s": 5, "cancel_outcome": "completed"})
    assert scenario.running_s == 5.0
    assert isinstance(scenario.running_s, float)
    assert scenario.cancel_outcome == "completed"


@given(
    total=st.integers(min_value=0, max_value=5000),
    running=st.floats(min_value=0, max_value=1e5),
    moments=st.lists(st.floats(min_value=-10, max_value=2e5), min_size=2, max_size=10),
)
def test_progress_is_monotonic_and_bounded(
    total: int, running: float, moments: list[float]
) -> None:
    tl = timeline(total=total, validating_s=1, running_s=running, expires_after_s=1e9)
    done = [phase_at(tl, T0 + m).done for m in sorted(moments)]
    assert all(0 <= d <= total for d in done)
    assert done == sorted(done)
    assert phase_at(tl, tl.finalizing_at).done == total

"""What a process may conclude from its own heartbeats (core/liveness.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orchestrator.core.liveness import OwnHeartbeats

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
STALE = timedelta(seconds=20)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_new_process_may_judge_others_at_once() -> None:
    own = OwnHeartbeats(STALE)
    assert not own.fresh(T0) and not own.may_judge_others(T0)  # never heard
    own.registered(T0, others_heard=True)
    assert own.fresh(T0) and own.may_judge_others(T0)


def test_beats_every_few_seconds_keep_it_a_judge() -> None:
    own = OwnHeartbeats(STALE)
    own.registered(T0, others_heard=True)
    for s in range(5, 100, 5):
        own.beat(at(s))
        assert own.may_judge_others(at(s + 4))


def test_after_a_gap_it_judges_again_only_once_heard_for_the_whole_stale_time() -> None:
    own = OwnHeartbeats(STALE)
    own.registered(T0, others_heard=True)
    own.beat(at(5))
    # the database is out from 6 to 30: the process's first claim after it comes
    # before its next beat, and its last beat is old
    assert not own.fresh(at(30)) and not own.may_judge_others(at(30))
    own.beat(at(31))  # heard again: a new run of beats begins
    assert own.fresh(at(31)) and not own.may_judge_others(at(31))
    for s in (36, 41, 46):
        own.beat(at(s))
        assert not own.may_judge_others(at(s))
    own.beat(at(51))
    assert own.may_judge_others(at(51))  # 20 s heard without a break


def test_a_gap_of_half_the_stale_time_breaks_the_run() -> None:
    own = OwnHeartbeats(STALE)
    own.registered(T0, others_heard=True)
    own.beat(at(10))  # a gap of exactly half: unbroken
    assert own.may_judge_others(at(10))
    own.beat(at(20.5))  # longer than half
    assert own.fresh(at(20.5)) and not own.may_judge_others(at(20.5))
    assert not own.fresh(at(31))  # its own beat 10.5 s old: it holds back its sends

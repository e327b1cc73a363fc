"""The shared request budget's rule: a token bucket on the database's clock, held back by 429s."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.core.request_budget import MAX_HOLD_SECONDS, Bucket, BudgetRule, hold, take

T0 = datetime(2026, 12, 3, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_batches_are_a_twentieth_of_a_second_and_the_burst_half_a_second() -> None:
    assert (BudgetRule(10).batch, BudgetRule(10).burst) == (1, 5.0)
    assert (BudgetRule(200).batch, BudgetRule(200).burst) == (10, 100.0)
    assert BudgetRule(100_000).batch == 50  # a statement per 50 requests at most
    assert BudgetRule(0.5).burst == 1.0  # at least one token fits
    with pytest.raises(ValueError):
        BudgetRule(0)


def test_take_grants_what_is_there_and_says_how_long_to_wait_when_empty() -> None:
    rule = BudgetRule(10)
    grant = take(Bucket(5.0, at(0)), at(0), rule, want=3)
    assert grant.granted == 3 and grant.bucket.tokens == 2.0
    grant = take(grant.bucket, at(0), rule, want=3)
    assert grant.granted == 2  # what is left, not more
    empty = take(grant.bucket, at(0), rule, want=1)
    assert empty.granted == 0 and empty.wait == pytest.approx(0.1)
    later = take(empty.bucket, at(0.1), rule, want=1)
    assert later.granted == 1  # refilled at the rate


def test_a_long_quiet_spell_refills_at_most_the_burst() -> None:
    rule = BudgetRule(10)
    grant = take(Bucket(0.0, at(0)), at(3600), rule, want=50)
    assert grant.granted == 5  # the burst, not 36,000


def test_over_any_stretch_the_tokens_granted_stay_within_rate_times_time_plus_burst() -> None:
    rule = BudgetRule(40)
    bucket = Bucket(rule.burst, at(0))
    granted = 0
    for step in range(1, 2001):  # 10 s of eager takers, every 5 ms
        grant = take(bucket, at(step * 0.005), rule, want=rule.batch)
        bucket, granted = grant.bucket, granted + grant.granted
    assert granted <= 40 * 10 + rule.burst
    assert granted >= 40 * 10 - rule.batch


def test_a_429_holds_everyone_back_then_refills_from_empty() -> None:
    rule = BudgetRule(10)
    held = hold(Bucket(5.0, at(0)), at(0), 2.0)
    assert held.held_until == at(2) and held.tokens == 0
    during = take(held, at(1.5), rule, want=1)
    assert during.granted == 0 and during.wait == pytest.approx(0.5)
    assert take(held, at(2.0), rule, want=1).granted == 0  # nothing refilled yet
    assert take(held, at(2.1), rule, want=1).granted == 1  # then at the rate


def test_a_shorter_hold_never_cuts_a_longer_one_short() -> None:
    longer = hold(Bucket(5.0, at(0)), at(0), 10.0)
    assert hold(longer, at(1), 1.0).held_until == at(10)


def test_a_clock_that_steps_back_refills_nothing() -> None:
    grant = take(Bucket(0.0, at(10)), at(9), BudgetRule(10), want=1)
    assert grant.granted == 0 and grant.bucket.counted_at == at(10)


def test_one_429_holds_everyone_back_a_minute_at_the_most() -> None:
    """A Retry-After of a day (a proxy's, or a server's mistake) would have stopped every
    process sharing the budget for a day, with nothing to lift it."""
    held = hold(Bucket(5.0, at(0)), at(0), 86_400.0)
    assert held.held_until == at(MAX_HOLD_SECONDS)
    assert take(held, at(MAX_HOLD_SECONDS + 0.2), BudgetRule(10), want=1).granted == 1


def test_a_clock_that_steps_back_further_than_any_hold_refills_from_now() -> None:
    """The server's clock stepped back an hour: the row's times are an hour ahead. Waiting
    for them would have stopped every process for that hour."""
    rule = BudgetRule(10)
    bucket = hold(Bucket(0.0, at(3600)), at(3600), 30.0)  # counted and held, then the step
    grant = take(bucket, at(0), rule, want=1)
    assert grant.granted == 0 and grant.wait <= MAX_HOLD_SECONDS
    assert grant.bucket.counted_at == at(0)
    assert take(grant.bucket, at(MAX_HOLD_SECONDS + 1), rule, want=1).granted == 1

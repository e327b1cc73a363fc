"""The reconciler's periodic jobs: each at most once per interval; a failure waits its turn."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from orchestrator.clock import ManualClock
from orchestrator.errors import DatabaseUnavailable
from orchestrator.processes.upkeep import Upkeep


def test_each_job_runs_when_due_and_a_failing_one_stops_nothing() -> None:
    clock = ManualClock()
    ran: list[str] = []

    def job(name: str) -> Callable[[], str]:
        def run() -> str:
            ran.append(name)
            return "ok"

        return run

    def broken() -> str:
        ran.append("broken")
        raise RuntimeError("a bug")

    upkeep = Upkeep(clock)
    upkeep.add("often", job("often"), every_seconds=60)
    upkeep.add("broken", broken, every_seconds=60)
    upkeep.add("rarely", job("rarely"), every_seconds=3600)
    upkeep.run_due()
    assert ran == ["often", "broken", "rarely"]
    clock.advance(59)
    upkeep.run_due()
    assert ran == ["often", "broken", "rarely"]
    clock.advance(1)
    upkeep.run_due()
    assert ran[3:] == ["often", "broken"]


def test_a_database_outage_goes_up_and_the_job_is_due_again_at_once() -> None:
    clock = ManualClock()
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise DatabaseUnavailable("database unavailable: gone")
        return "ok"

    upkeep = Upkeep(clock)
    upkeep.add("flaky", flaky, every_seconds=3600)
    with pytest.raises(DatabaseUnavailable):
        upkeep.run_due()
    upkeep.run_due()  # the database is back: no need to wait an hour
    assert calls == 2

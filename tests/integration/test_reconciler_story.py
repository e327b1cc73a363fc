"""The reconciler tells its story at INFO (issue #14): each cancel settled, each harvest
done (lines, seconds), a periodic one-line summary, and each API error logged once."""

from __future__ import annotations

import logging
import re

import pytest

from orchestrator.clock import ManualClock
from orchestrator.db.database import Database

from .conftest import ReconcilerFactory, Sim, track
from .test_reconciler import request_cancel


def said(caplog: pytest.LogCaptureFixture, batch_id: str) -> list[str]:
    return [
        f"{r.levelname} {r.getMessage()}"
        for r in caplog.records
        if getattr(r, "batch_id", None) == batch_id
    ]


def test_a_settled_cancel_and_a_finished_harvest_each_get_an_info_line(
    database: Database,
    sim: Sim,
    clock: ManualClock,
    reconciler: ReconcilerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    batch_id = sim.simulator.create_batch(300, cancel_after_s=30)
    track(database, clock, batch_id)
    request_cancel(database, clock, batch_id)
    clock.advance(40)
    with caplog.at_level(logging.INFO):
        reconciler().run_once()
    lines = said(caplog, batch_id)
    assert "INFO cancel settled: cancelled" in lines, lines
    harvested = [line for line in lines if line.startswith("INFO harvest done: ")]
    assert len(harvested) == 1, lines
    assert harvested[0].startswith("INFO harvest done: 300 result line(s), 0 unreadable, ")
    assert harvested[0].endswith("s")  # "... in 0.0s": how long it took


def test_a_404_is_logged_once_per_poll(
    database: Database,
    clock: ManualClock,
    reconciler: ReconcilerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    track(database, clock, "batch_mistyped")
    with caplog.at_level(logging.INFO):
        reconciler().run_once()
    mentions = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("orchestrator") and "404" in r.getMessage()
    ]
    assert len(mentions) == 1, mentions
    assert mentions[0].startswith("poll failed: HTTP 404"), mentions  # the code first


def test_the_reconciler_logs_a_summary_line_at_each_interval(
    database: Database,
    sim: Sim,
    clock: ManualClock,
    reconciler: ReconcilerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    done = sim.simulator.create_batch(20, age_s=100_000)  # long finished
    running = [sim.simulator.create_batch(5, age_s=0) for _ in range(2)]
    track(database, clock, done, *running, "batch_mistyped")
    r = reconciler(summary_seconds=60.0)
    with caplog.at_level(logging.INFO):
        r.run_once()
        assert not [x for x in caplog.records if getattr(x, "action", None) == "summary"]
        clock.advance(61)
        track(database, clock, "batch_new")  # due now, not yet polled
        r.run_once()
    lines = [x.getMessage() for x in caplog.records if getattr(x, "action", None) == "summary"]
    assert len(lines) == 1, lines
    # After the second pass nothing is due (all polled); one harvest is done over both
    # passes (20 lines); three 404s: the mistyped id at each pass, the new one once.
    assert re.fullmatch(
        r"reconciler: 0 due, \d+ in flight; last 61s: 1 done \(20 result line\(s\)\), "
        r"\d+ polled, 3 error\(s\)",
        lines[0],
    ), lines

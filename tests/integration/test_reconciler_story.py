"""The reconciler tells its story at INFO (issue #14): each cancel settled, each harvest
done (lines, seconds), a periodic one-line summary, and each API error logged once."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from orchestrator.clock import ManualClock
from orchestrator.db.database import Database
from orchestrator.db.models import Batch

from .conftest import ReconcilerFactory, Sim, track
from .test_reconciler import request_cancel


@dataclass
class World:
    db: Database
    sim: Sim
    clock: ManualClock
    reconciler: ReconcilerFactory
    caplog: pytest.LogCaptureFixture

    def said(self, batch_id: str) -> list[str]:
        return [
            f"{r.levelname} {r.getMessage()}"
            for r in self.caplog.records
            if getattr(r, "batch_id", None) == batch_id
        ]

    def summaries(self) -> list[str]:
        return [
            r.getMessage() for r in self.caplog.records if getattr(r, "action", None) == "summary"
        ]


@pytest.fixture
def world(
    database: Database,
    sim: Sim,
    clock: ManualClock,
    reconciler: ReconcilerFactory,
    caplog: pytest.LogCaptureFixture,
) -> World:
    caplog.set_level(logging.INFO)
    return World(database, sim, clock, reconciler, caplog)


def test_a_settled_cancel_and_a_finished_harvest_each_get_an_info_line(world: World) -> None:
    batch_id = world.sim.simulator.create_batch(300, cancel_after_s=30)
    track(world.db, world.clock, batch_id)
    request_cancel(world.db, world.clock, batch_id)
    world.clock.advance(40)
    world.reconciler().run_once()
    lines = world.said(batch_id)
    assert "INFO cancel settled: cancelled" in lines, lines
    harvested = [line for line in lines if line.startswith("INFO harvest done: ")]
    assert len(harvested) == 1, lines
    assert harvested[0].startswith("INFO harvest done: 300 result line(s), 0 unreadable, ")
    assert harvested[0].endswith("s")  # "... in 0.0s": how long it took


def test_a_404_is_logged_once_per_poll(world: World) -> None:
    track(world.db, world.clock, "batch_mistyped")
    world.reconciler().run_once()
    mentions = [
        r.getMessage()
        for r in world.caplog.records
        if r.name.startswith("orchestrator") and "404" in r.getMessage()
    ]
    assert len(mentions) == 1, mentions
    assert mentions[0].startswith("poll failed: HTTP 404"), mentions  # the code first


def test_the_reconciler_logs_a_summary_line_at_each_interval(world: World) -> None:
    done = world.sim.simulator.create_batch(20, age_s=100_000)  # long finished
    running = [world.sim.simulator.create_batch(5, age_s=0) for _ in range(2)]
    track(world.db, world.clock, done, *running, "batch_mistyped")
    r = world.reconciler(summary_seconds=60.0)
    r.run_once()
    assert world.summaries() == []
    world.clock.advance(61)
    track(world.db, world.clock, "batch_new")  # due now, not yet polled
    r.run_once()
    lines = world.summaries()
    assert len(lines) == 1, lines
    # After the second pass nothing is due (all polled); one harvest is done over both
    # passes (20 lines); three 404s: the mistyped id at each pass, the new one once.
    assert re.fullmatch(
        r"reconciler: 0 due, \d+ in flight; last 61s: 1 done \(20 result line\(s\)\), "
        r"\d+ polled, 3 error\(s\)",
        lines[0],
    ), lines


def test_a_stored_error_leads_with_its_status_code(world: World) -> None:
    """Found: error strings led with the URL, so the status table's cut cell lost the
    status code. What the poll stores (the table's last error) begins with it."""
    track(world.db, world.clock, "batch_mistyped")
    world.reconciler().run_once()
    with world.db.transaction() as session:
        error = session.scalar(select(Batch.last_error).where(Batch.id == "batch_mistyped"))
    assert error is not None and error.startswith("HTTP 404"), error
    assert "/batches/" in error  # the call is still said, after the code

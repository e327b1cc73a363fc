"""Pruning on PostgreSQL while a reconciler harvests: no write lost, none blocked.

The two run in lock step, each waiting (bounded) after each of its commits until
the other has committed as many: prune chunk, harvest chunk, prune chunk... Every
connection has ``lock_timeout`` = 2 s, so a statement that waited on a lock the
other side held would fail; a side that waited on the other past the bound is
counted. Neither may happen, and every result must be stored exactly once.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from orchestrator.clock import ManualClock, utcnow
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, BatchResult
from orchestrator.db.retention import RetentionStore
from orchestrator.probes import Heartbeat
from orchestrator.processes.reconciler import Reconciler, ReconcilerConfig
from orchestrator.processes.retention import Pruner
from tests.db.retention_seed import seed_batch

from .conftest import Sim, expected_outcomes, stored_outcomes, track

pytestmark = pytest.mark.postgres
BOUND_S = 10.0  # a side never waits longer than this for the other


class Lockstep:
    """Two sides that take turns: after a step, a side waits until the other caught up."""

    def __init__(self) -> None:
        self.steps = {"prune": 0, "harvest": 0}
        self.finished: set[str] = set()
        self.timeouts = 0
        self.switches = 0
        self._last: str | None = None
        self._cond = threading.Condition()

    def step(self, side: str) -> None:
        other = "harvest" if side == "prune" else "prune"
        with self._cond:
            self.steps[side] += 1
            if self._last not in (None, side):
                self.switches += 1
            self._last = side
            self._cond.notify_all()
            caught_up = self._cond.wait_for(
                lambda: other in self.finished or self.steps[other] >= self.steps[side],
                timeout=BOUND_S,
            )
            if not caught_up:
                self.timeouts += 1

    def finish(self, side: str) -> None:
        with self._cond:
            self.finished.add(side)
            self._cond.notify_all()


class SteppingHeartbeat(Heartbeat):
    """The reconciler beats after every committed chunk: that is its step."""

    def __init__(self, clock: ManualClock, lockstep: Lockstep) -> None:
        super().__init__(clock)
        self.lockstep = lockstep

    def beat(self, busy_for: float = 0.0) -> None:
        super().beat(busy_for)
        self.lockstep.step("harvest")


def test_pruning_while_a_reconciler_writes_loses_and_blocks_nothing(
    pg_url: str, sim: Sim, clock: ManualClock
) -> None:
    db = Database.connect(f"{pg_url}?options=-c%20lock_timeout%3D2000")
    now = utcnow()
    old = [f"batch_old_{i:02d}" for i in range(8)]
    for batch_id in old:
        seed_batch(db, batch_id, now=now, ended_at=now - timedelta(days=40), results=300)
    live = [sim.simulator.create_batch(1500, age_s=100) for _ in range(3)]
    track(db, clock, *live)

    lockstep = Lockstep()
    pruner = Pruner(RetentionStore(db, chunk_rows=100), on_chunk=lambda: lockstep.step("prune"))
    client = sim.client(clock)
    reconciler = Reconciler(
        db,
        client,
        ReconcilerConfig(concurrency=1, chunk_lines=100),
        clock,
        "reconciler-live",
        random_unit=lambda: 0.0,
        heartbeat=SteppingHeartbeat(clock, lockstep),
    )
    failures: list[BaseException] = []

    def harvest() -> None:
        try:
            summary = reconciler.run_once()
            assert summary.harvested == 3, summary
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)
        finally:
            lockstep.finish("harvest")

    worker = threading.Thread(target=harvest)
    worker.start()
    try:
        done = pruner.prune(pruner.plan(timedelta(days=30)))
    finally:
        lockstep.finish("prune")
        worker.join(timeout=120)
        reconciler.close()
        client.close()
    assert not worker.is_alive()
    assert failures == []

    assert lockstep.timeouts == 0  # neither side ever waited on the other's locks
    assert lockstep.switches >= 20  # they truly interleaved, chunk by chunk
    assert (done.batches, done.results) == (8, 8 * 300)
    for batch_id in live:  # every line the reconciler wrote is there, once
        assert stored_outcomes(db, batch_id) == expected_outcomes(sim.simulator, batch_id)
    with db.transaction() as session:
        assert session.scalar(select(func.count()).where(BatchResult.batch_id.in_(old))) == 0
        harvests = dict(session.execute(select(Batch.id, Batch.harvest_state)).all())
    assert {harvests[b] for b in live} == {"done"}
    assert len(harvests) == len(old) + len(live)  # every batch row kept
    db.dispose()

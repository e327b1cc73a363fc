"""SIGKILL a reconciler at random points of a large harvest, restart it: rows exactly right.

Every pass kills itself just before its k-th COMMIT, k drawn at random: the
transaction in hand is lost and the k-1 before it are durable, the states a
crash can leave in the database. Each restart resumes where its predecessor's
last commit left off, so the kills walk through the whole harvest, from start-up
and the poll to its last few dozen commits; the pass that finishes is the first
whose k is past the commits still needed. Counting commits rather than waiting a
random time keeps the test independent of how fast the machine is.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import signal
from datetime import datetime, timedelta

from sqlalchemy import event, select

from orchestrator.clock import ManualClock, utcnow
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, ResultFile
from orchestrator.processes.reconciler import Reconciler, ReconcilerConfig
from orchestrator.simulator import Scenario

from .conftest import Sim, expected_outcomes, make_client, stored_outcomes, track

LINES = 6000
STEP_S = 100.0  # each restart's clock runs this much later: a killed run's lease has expired
KILL_WITHIN_COMMITS = 40  # a whole harvest commits a few hundred times (20-line chunks)
MAX_ROUNDS = 60


class _LaterClock:
    """Wall time shifted forward, so a restart sees its predecessor's lease as expired."""

    def __init__(self, offset_s: float) -> None:
        self._offset = timedelta(seconds=offset_s)

    def now(self) -> datetime:
        return utcnow() + self._offset


def _reconcile(db_url: str, base_url: str, offset_s: float, kill_at: int) -> None:
    """A reconciler process (forked: it starts in milliseconds) doing one pass,
    killing itself with SIGKILL just before its `kill_at`-th commit."""
    logging.disable(logging.CRITICAL)
    clock = _LaterClock(offset_s)
    db = Database.connect(db_url, pool_size=2)
    commits = 0

    @event.listens_for(db.engine, "commit")
    def _maybe_die(connection: object) -> None:
        nonlocal commits
        commits += 1
        if commits == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    client = make_client(base_url, ManualClock())
    config = ReconcilerConfig(concurrency=1, chunk_lines=20, read_bytes=4096, lease_seconds=30)
    with Reconciler(db, client, config, clock, f"crash-{offset_s:g}") as reconciler:
        reconciler.run_once()
    os._exit(0)


def _harvested(db_url: str, batch_id: str) -> bool:
    db = Database.connect(db_url)
    try:
        with db.transaction() as session:
            return session.scalar(select(Batch.harvest_state).where(Batch.id == batch_id)) == "done"
    finally:
        db.dispose()


def test_killed_at_random_points_and_restarted_the_rows_are_exactly_right(
    db_url: str, sim: Sim, clock: ManualClock
) -> None:
    batch_id = sim.simulator.create_batch(LINES, Scenario(body_bytes=300), cancel_after_s=31)
    clock.advance(100)  # cancelled: output and error files, both large
    setup = Database.connect(db_url)
    track(setup, clock, batch_id)
    setup.dispose()  # nothing pooled is inherited by the forked children

    fork = multiprocessing.get_context("fork")
    rng = random.Random(5)
    kills = finished = 0
    for round_ in range(MAX_ROUNDS):
        kill_at = rng.randint(1, KILL_WITHIN_COMMITS)
        args = (db_url, sim.server.url, round_ * STEP_S, kill_at)
        child = fork.Process(target=_reconcile, args=args)
        child.start()
        child.join()
        if child.exitcode == -signal.SIGKILL:
            kills += 1
        else:
            assert child.exitcode == 0, child.exitcode
        if _harvested(db_url, batch_id):
            finished = round_ + 1
            break
    assert finished and kills >= 8, (finished, kills)

    db = Database.connect(db_url)
    try:
        assert stored_outcomes(db, batch_id) == expected_outcomes(sim.simulator, batch_id)
        with db.transaction() as session:
            row = session.get(Batch, batch_id)
            assert row is not None
            assert (row.results_stored, row.result_line_errors) == (LINES, 0)
            for result_file in session.scalars(select(ResultFile)):
                assert result_file.state == "done"
                assert result_file.duplicates == 0  # no chunk was ever stored twice
                assert result_file.lines == result_file.lines_committed == result_file.results
    finally:
        db.dispose()

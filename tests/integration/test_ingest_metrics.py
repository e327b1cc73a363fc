"""The reconciler feeds the ingest counters (they stayed at zero before)."""

from __future__ import annotations

from sqlalchemy import func, select

from orchestrator.clock import ManualClock
from orchestrator.db.database import Database
from orchestrator.db.models import ResultFile
from orchestrator.metrics import Metrics
from orchestrator.processes.reconciler import Reconciler, ReconcilerConfig

from .conftest import Sim, track


def test_ingested_results_and_bytes_are_counted_per_file_kind(
    database: Database, sim: Sim, clock: ManualClock
) -> None:
    batch_id = sim.simulator.create_batch(500, age_s=100, cancel_after_s=30)
    track(database, clock, batch_id)
    metrics = Metrics()
    client = sim.client(clock)
    with Reconciler(
        database, client, ReconcilerConfig(concurrency=1), clock, "r", metrics=metrics
    ) as reconciler:
        summary = reconciler.run_once()
    client.close()
    with database.transaction() as session:
        sizes = dict(
            session.execute(
                select(ResultFile.kind, func.sum(ResultFile.bytes)).group_by(ResultFile.kind)
            ).all()
        )
        rows = dict(
            session.execute(
                select(ResultFile.kind, func.sum(ResultFile.results)).group_by(ResultFile.kind)
            ).all()
        )
    assert set(sizes) == {"output", "error"}
    for kind in ("output", "error"):
        labels = {"kind": kind}
        assert (
            metrics.registry.get_sample_value("orchestrator_ingested_results_total", labels)
            == (rows[kind])
        )
        assert (
            metrics.registry.get_sample_value("orchestrator_ingested_bytes_total", labels)
            == (sizes[kind])
        )
    assert summary.results_stored == sum(rows.values()) == 500

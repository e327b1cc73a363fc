"""The soak in miniature, on every change: the same harness and invariants as bench/soak.py.

150 batches in every situation, faults on, 2 workers and 2 reconcilers on
PostgreSQL, a few of them SIGKILLed and restarted; then every invariant is checked
against the simulator's ground truth (see docs/soak.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import SoakConfig, run_soak

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SHORT = SoakConfig(
    batches=150,
    workers=2,
    reconcilers=2,
    kills=6,
    kill_interval=2.0,
    time_scale=120.0,  # a batch runs for 30 s: most cancels land while it runs, even under load
    waves=3,
    wave_gap=2.0,
    deadline=150.0,
    seed=11,
    bytes_sample=1000,  # every file
)


@pytest.mark.timeout(300)
def test_short_soak_keeps_every_invariant(pg_url: str, tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_soak(SHORT, pg_url, tmp_path, log=lines.append)
    report = "\n".join([*lines, result.report(), f"logs: {tmp_path}"])

    assert result.passed, report
    # It did what it says: processes were killed, faults fired, cancels raced.
    assert sum(result.kills.values()) == SHORT.kills, report
    assert result.counters["faults_total"] > 20, report
    assert result.counters["cancels_applied"] > 10, report
    assert result.counters["max_concurrent_cancels_any_batch"] == 1, report

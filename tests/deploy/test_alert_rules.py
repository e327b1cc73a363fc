"""docs/deploy/alerts.yml: valid (`promtool check rules`), each alert unit-tested
(`promtool test rules`), and every metric it reads is one a process exports.

promtool comes from Debian's `prometheus` package (.ci/run installs it). Without it
these tests skip, except in CI (CI=true or ORCHESTRATOR_REQUIRE_PROMTOOL=1), where
that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.clock import ManualClock
from orchestrator.db.database import Database
from orchestrator.metrics import Metrics
from orchestrator.probes import Heartbeat, HeartbeatCollector

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy"
REQUIRED = os.environ.get("CI") == "true" or os.environ.get("ORCHESTRATOR_REQUIRE_PROMTOOL") == "1"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool not found (apt-get install prometheus)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.mark.parametrize(
    "args", [["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]]
)
def test_promtool(args: list[str]) -> None:
    done = subprocess.run(
        [promtool(), *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_unit_tested() -> None:
    rules = set(re.findall(r"- alert: (\w+)", (DEPLOY / "alerts.yml").read_text()))
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "alerts_test.yml").read_text()))
    assert len(rules) == 10 and rules == tested


def test_every_metric_the_rules_read_is_exported(database: Database) -> None:
    metrics = Metrics.for_database(database)
    metrics.registry.register(HeartbeatCollector(Heartbeat(ManualClock()), "worker"))
    metrics.observe_ingested("output", results=1, bytes_read=1)
    exported = {s.name for family in metrics.registry.collect() for s in family.samples}
    exported |= {family.name for family in metrics.registry.collect()}
    read = set(re.findall(r"\b(orchestrator_\w+)", (DEPLOY / "alerts.yml").read_text()))
    assert read and read <= exported, read - exported

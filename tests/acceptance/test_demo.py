"""The README's first command: `orchestrator demo` runs the whole job end to end."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.demo import PLAN, fresh_database

pytestmark = pytest.mark.slow


def test_the_demo_settles_every_cancel_and_keeps_every_result(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "OPENAI_"))}
    # A previous run's database is at the path, as when `./scripts/demo` is run again:
    # the demo resets it (and only a demo database; see test_demo_database_safety.py).
    previous = Database.connect(fresh_database(tmp_path / "demo.sqlite3"))
    CancelStore(previous).request(["batch_fromlastrun"], now=datetime.now(UTC), requested_by="demo")
    previous.dispose()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "demo",
            "--json",
            "--database",
            str(tmp_path / "demo.sqlite3"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["finished"] is True
    batches = report["batches"]
    assert len(batches) == sum(count for _, count, *_ in PLAN)  # last run's batch is gone
    assert "batch_fromlastrun" not in {b["batch_id"] for b in batches}
    statuses = {b["status"] for b in batches}
    assert statuses == {"cancelled", "completed", "expired", "failed"}
    cancels = {b["cancel"] for b in batches}
    assert {"cancelled", "too_late:completed", "too_late:expired", "too_late:failed"} <= cancels
    # every line of every batch that had requests was recorded, exactly once
    for batch in batches:
        assert batch["results"] == batch["requests"], batch
    partial = [b for b in batches if b["label"] == "in_progress"]
    assert all(0 < b["outputs"] < b["requests"] for b in partial)  # partial answers kept
    overview_through_the_printed_console_command(report["console_command"], tmp_path, env)


def overview_through_the_printed_console_command(
    command: str, where: Path, env: dict[str, str]
) -> None:
    """The one command the demo prints opens the console on the demo's database."""
    assert command.startswith("python -m orchestrator console --database-url sqlite:///")
    argv = [sys.executable, *shlex.split(command)[1:], "--port", "0"]
    console = subprocess.Popen(argv, cwd=where, env=env, stderr=subprocess.PIPE, text=True)
    assert console.stderr is not None
    try:
        said = console.stderr.readline()
        address = said.split("console: ", 1)[1].split()[0]
        overview = httpx.get(address, timeout=10)
        assert overview.status_code == 200
        assert "cancelled" in overview.text and "results recorded" in overview.text
    finally:
        console.terminate()
        console.communicate(timeout=20)
    assert console.returncode == 0

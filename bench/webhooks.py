"""Webhooks against polling alone: how soon a terminal status is ours, and at what cost.

    python -m bench.webhooks --batches 500 --time-scale 10

Two arms run side by side in one run, each with its own simulator process, scratch
PostgreSQL database and `orchestrator reconcile` process, on the same plan of
batches (same lifetimes): "polling" with the normal poll policy, and "webhooks"
where the simulator sends signed events to an `orchestrator webhooks` process and
the reconciler stretches its polling while they flow.

Every lifecycle runs --time-scale times faster than real, and so do the poll
settings (initial 5 s, cap 300 s, with webhooks 1 h; silence 15 min), so the
number of polls per batch is what it would be at full scale. The measured batches
live 1-3 (simulated) hours and have no failed requests, so each has one result file
to download. They are created and tracked in groups over --spread seconds, as work
arrives, rather than all at once (a backlog of first polls would delay everything).
As in a steady state, events are already flowing when they are
tracked: a background of other batches (not tracked; their events are recorded
and ignored) ends throughout the run, and tracking starts once the first event
is in. Without such a stream the reconciler would, by design, fall back to the
normal policy after 15 (simulated) minutes of silence.

Reported per arm: time from the server's terminal timestamp (`completed_at`,
whole seconds, so up to 1 s of rounding is included) to our row's terminal
status (p50, p99, max), and API requests per batch (status GETs; all requests),
then the ratios.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.harness import SIM_KEY, RunningSimulator, free_port, scratch_database, simulator
from orchestrator.clock import utcnow
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, BatchEvent, WebhookEvent

SECRET = "whsec_" + base64.b64encode(b"bench secret: 32 bytes, not real").decode()
TERMINAL = ("completed", "failed", "expired", "cancelled")


@dataclass(frozen=True)
class Plan:
    running_s: list[float]  # simulated seconds each measured batch runs
    background_s: list[float]  # and each background batch


@dataclass
class Arm:
    name: str
    webhooks: bool
    url: str = ""
    sim: RunningSimulator | None = None
    db: Database | None = None


def plan(batches: int, seed: int) -> Plan:
    rng = random.Random(seed)
    return Plan(
        [rng.uniform(3600, 10800) for _ in range(batches)],
        [0.0, *(rng.uniform(0, 12000) for _ in range(max(20, batches // 5)))],
    )


def create(sim: RunningSimulator, running_s: list[float]) -> list[str]:
    with sim.control() as http:
        return [
            http.post(
                "/_sim/batches",
                json={"requests": 5, "scenario": {"running_s": r, "failed_request_ratio": 0.0}},
            )
            .raise_for_status()
            .json()["id"]
            for r in running_s
        ]


def events_in(db: Database) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(WebhookEvent)) or 0)


def settings_env(scale: float, database_url: str, sim: RunningSimulator) -> dict[str, str]:
    return {
        **os.environ,
        "ORCHESTRATOR_DATABASE_URL": database_url,
        "OPENAI_BASE_URL": sim.url,
        "OPENAI_API_KEY": SIM_KEY,
        "OPENAI_WEBHOOK_SECRET": SECRET,
        "ORCHESTRATOR_POLL_INITIAL_SECONDS": str(5.0 / scale),
        "ORCHESTRATOR_POLL_MAX_SECONDS": str(300.0 / scale),
        "ORCHESTRATOR_POLL_CANCELLING_MAX_SECONDS": str(30.0 / scale),
        "ORCHESTRATOR_POLL_ERROR_MAX_SECONDS": str(600.0 / scale),
        "ORCHESTRATOR_POLL_INTERVAL_WITH_WEBHOOKS": str(3600.0 / scale),
        "ORCHESTRATOR_WEBHOOK_SILENCE_SECONDS": str(900.0 / scale),
        "ORCHESTRATOR_RECONCILE_IDLE_SECONDS": "0.2",
        "ORCHESTRATOR_LOG_LEVEL": "WARNING",
    }


@contextmanager
def process(command: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def wait_listening(port: int, seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)  # polling a port that is not open yet; bounded by the deadline
    raise RuntimeError(f"nothing listening on port {port}")


def done(db: Database, total: int) -> bool:
    with db.transaction() as session:
        count = session.scalar(
            select(func.count()).where(Batch.status.in_(TERMINAL), Batch.next_poll_at.is_(None))
        )
    return int(count or 0) >= total


def latencies(db: Database) -> list[float]:
    with db.transaction() as session:
        rows = session.execute(
            select(BatchEvent.recorded_at, BatchEvent.server_at).where(
                BatchEvent.kind == "status",
                BatchEvent.to_status.in_(TERMINAL),
                BatchEvent.server_at.is_not(None),
            )
        ).all()
    return sorted((recorded - server).total_seconds() for recorded, server in rows if server)


def event_lag(db: Database) -> tuple[list[float], list[float]]:
    """Seconds from the server's terminal timestamp to the first event recorded for the
    batch, and from there to the terminal status in our row (batches with an event)."""
    with db.transaction() as session:
        first = dict(
            session.execute(
                select(WebhookEvent.batch_id, func.min(WebhookEvent.received_at)).group_by(
                    WebhookEvent.batch_id
                )
            ).all()
        )
        rows = session.execute(
            select(BatchEvent.batch_id, BatchEvent.recorded_at, BatchEvent.server_at).where(
                BatchEvent.kind == "status", BatchEvent.to_status.in_(TERMINAL)
            )
        ).all()
    to_event, to_row = [], []
    for batch_id, recorded, server in rows:
        received = first.get(batch_id)
        if received is None or server is None:
            continue
        to_event.append((received - server).total_seconds())
        to_row.append((recorded - received).total_seconds())
    return sorted(to_event), sorted(to_row)


def polls_histogram(db: Database) -> dict[int, int]:
    """How many batches were polled how many times (our own count, failures included)."""
    with db.transaction() as session:
        rows = session.execute(select(Batch.polls, func.count()).group_by(Batch.polls)).all()
    return {int(polls): int(count) for polls, count in sorted(rows)}


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def run(
    batches: int, scale: float, seed: int, work: Path, deadline: float, spread: float
) -> dict[str, Any]:
    lifetimes = plan(batches, seed)
    arms = [Arm("polling", webhooks=False), Arm("webhooks", webhooks=True)]
    with ExitStack() as stack:
        for index, arm in enumerate(arms):
            url = stack.enter_context(scratch_database("postgres", tag=f"_{index}"))
            hook_port = free_port()
            hooks = (f"http://127.0.0.1:{hook_port}/webhooks/openai",) if arm.webhooks else ()
            arm.sim = stack.enter_context(
                simulator(scale, webhook_urls=hooks, webhook_secret=SECRET, seed=seed)
            )
            arm.db = Database.connect(url, pool_size=2)
            stack.callback(arm.db.dispose)
            env = settings_env(scale, url, arm.sim)
            if arm.webhooks:
                command = [sys.executable, "-m", "orchestrator", "webhooks"]
                command += ["--port", str(hook_port)]
                stack.enter_context(process(command, env, work / f"{arm.name}-webhooks.log"))
                wait_listening(hook_port)
            reconcile = [sys.executable, "-m", "orchestrator", "reconcile"]
            stack.enter_context(process(reconcile, env, work / f"{arm.name}-reconcile.log"))
        for arm in arms:
            assert arm.sim is not None
            create(arm.sim, lifetimes.background_s)
        hooked = arms[1].db
        assert hooked is not None
        warm = time.monotonic()
        while events_in(hooked) == 0 and time.monotonic() - warm < 60:
            time.sleep(0.1)  # the first background event; bounded
        groups = 20
        size = -(-batches // groups)
        for start in range(0, batches, size):  # the same lifetimes in both, side by side
            began = time.monotonic()
            for arm in arms:
                assert arm.sim is not None and arm.db is not None
                ids = create(arm.sim, lifetimes.running_s[start : start + size])
                BatchStore(arm.db).track(ids, now=utcnow(), source="track")
            time.sleep(max(0.0, spread / groups - (time.monotonic() - began)))  # pacing
        started = time.monotonic()
        pending = list(arms)
        while pending and time.monotonic() - started < deadline:
            pending = [a for a in pending if a.db is None or not done(a.db, batches)]
            time.sleep(0.5)  # progress check of separate processes, bounded by the deadline
        results: dict[str, Any] = {"unfinished": [a.name for a in pending]}
        for arm in arms:
            assert arm.sim is not None and arm.db is not None
            counters = arm.sim.counters()
            totals = counters["requests_total"]
            lat = latencies(arm.db)
            results[arm.name] = {
                "terminal": len(lat),
                "p50_s": pct(lat, 0.50),
                "p99_s": pct(lat, 0.99),
                "max_s": lat[-1] if lat else float("nan"),
                "gets_per_batch": totals.get("retrieve", 0) / batches,
                "requests_per_batch": sum(totals.values()) / batches,
                "webhooks": counters.get("webhooks", {}),
                "polls_histogram": polls_histogram(arm.db),
            }
        to_event, to_row = event_lag(arms[1].db)  # type: ignore[arg-type]
        results["split"] = {
            "to_event_p50": pct(to_event, 0.5),
            "to_event_p99": pct(to_event, 0.99),
            "event_to_row_p50": pct(to_row, 0.5),
            "event_to_row_p99": pct(to_row, 0.99),
        }
        return results


def report(results: dict[str, Any], batches: int, scale: float) -> str:
    poll, hook = results["polling"], results["webhooks"]
    lines = [f"{batches} batches, time scale {scale:g}, arms side by side in one run"]
    lines.append(f"{'':24}{'polling':>12}{'webhooks':>12}{'ratio':>10}")
    for key, label in (
        ("p50_s", "p50 to terminal (s)"),
        ("p99_s", "p99 to terminal (s)"),
        ("max_s", "max to terminal (s)"),
        ("gets_per_batch", "status GETs per batch"),
        ("requests_per_batch", "all requests per batch"),
    ):
        ratio = poll[key] / hook[key] if hook[key] else float("inf")
        lines.append(f"{label:24}{poll[key]:>12.2f}{hook[key]:>12.2f}{ratio:>9.1f}x")
    lines.append(f"terminal rows: polling {poll['terminal']}, webhooks {hook['terminal']}")
    split = results["split"]
    lines.append(
        "webhooks arm, server end -> event recorded: p50 {to_event_p50:.2f} s, "
        "p99 {to_event_p99:.2f} s; event -> terminal in our row: p50 {event_to_row_p50:.2f} s, "
        "p99 {event_to_row_p99:.2f} s".format(**split)
    )
    lines.append(f"webhook deliveries: {hook['webhooks']}")
    lines.append(f"batches by polls made, webhooks arm: {hook['polls_histogram']}")
    if results["unfinished"]:
        lines.append(f"NOT FINISHED before the deadline: {results['unfinished']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__)
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--time-scale", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=1800.0, help="seconds")
    parser.add_argument("--spread", type=float, default=120.0, help="seconds to track them all")
    parser.add_argument("--work-dir", type=Path, default=Path("bench-webhooks"))
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    results = run(
        args.batches, args.time_scale, args.seed, args.work_dir, args.deadline, args.spread
    )
    print(report(results, args.batches, args.time_scale))
    return 1 if results["unfinished"] else 0


if __name__ == "__main__":
    sys.exit(main())

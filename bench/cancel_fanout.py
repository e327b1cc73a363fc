"""Cancel fan-out end to end, side by side with the official client (issue #13, target 1).

    .venv/bin/python -m bench.cancel_fanout --n 2000 --latency 0.1 --width 32 --rounds 3

Every arm is a process of its own, timed from its start to its exit, against one
simulator that adds ``--latency`` seconds to each cancel:

- peer: the official `openai` client cancelling the N batches in a thread pool of
  ``--width`` threads, persisting nothing (bench/cancel_fanout_peer.py);
- sqlite / postgres: ``orchestrator worker --once --concurrency WIDTH`` draining N
  cancel requests recorded beforehand in a scratch database, every attempt
  persisted (a ``cancel_attempts`` row, the request's state, the ``cancelling``
  Batch applied through the state machine, its events); checked after each run.

The arms take turns within a round (the order rotates from round to round) so the
host's load hits them alike. CPU is each process's own (user + system, from
``wait4``). Printed: median and min seconds per arm, CPU ms per cancel, the ratio
of medians (ours / peer; <= 1.00 is at least as fast), and the load average.
Every batch is cancelled once before the first round, so each arm finds them all
``cancelling`` and the server does the same work for each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import distinct, func, select

from bench.harness import SIM_KEY, RunningSimulator, scratch_database, simulator
from orchestrator.clock import SystemClock
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, BatchEvent, CancelAttempt, CancelRequest

PEER = "peer (openai, threads)"
PEER_SCRIPT = Path(__file__).resolve().parent / "cancel_fanout_peer.py"
BIN = Path(sys.executable).parent
TARGET_CPU_MS = 0.6


@dataclass
class Arm:
    name: str
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    idle_cpu: list[float] = field(default_factory=list)  # start-up and exit, nothing due

    def cpu_ms(self, n: int) -> tuple[float, float | None]:
        """CPU ms per cancel: all of it, and less the process's start-up and exit."""
        whole = statistics.median(self.cpu) * 1000 / n
        if not self.idle_cpu:
            return whole, None
        return whole, (statistics.median(self.cpu) - statistics.median(self.idle_cpu)) * 1000 / n

    def median(self) -> float:
        return statistics.median(self.seconds)


def load() -> str:
    return " ".join(f"{n:.1f}" for n in os.getloadavg())


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stdout) of one process, from its start to its exit."""
    # Output to files, not pipes: a pipe nobody reads while we wait would fill and block it.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        raise SystemExit(f"{argv[:3]} exited {process.returncode}: {stderr[-2000:]}")
    return elapsed, usage.ru_utime + usage.ru_stime, stdout


def child_env(sim: RunningSimulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    env.update(OPENAI_API_KEY=SIM_KEY, OPENAI_BASE_URL=sim.url, **extra)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode cached, as in an installed package
    return env


def run_peer(sim: RunningSimulator, ids_file: str, width: int) -> tuple[float, float]:
    argv = [sys.executable, str(PEER_SCRIPT), ids_file, str(width)]
    seconds, cpu, _ = timed(argv, child_env(sim))
    return seconds, cpu


def run_ours(
    sim: RunningSimulator, backend: str, ids: list[str], width: int, tag: str
) -> tuple[float, float, float]:
    """(seconds, CPU seconds) of the run, and the CPU of a run with nothing to do."""
    with scratch_database(backend, tag=tag) as url:
        db = Database.connect(url)
        CancelStore(db).request(ids, now=SystemClock().now(), requested_by="bench")
        db.dispose()
        argv = [str(BIN / "orchestrator"), "worker", "--once", "--json"]
        argv += ["--concurrency", str(width)]
        env = child_env(sim, ORCHESTRATOR_DATABASE_URL=url)
        seconds, cpu, out = timed(argv, env)
        check(url, ids, json.loads(out))
        _, idle_cpu, _ = timed(argv, env)  # again, nothing due: start-up and exit alone
    return seconds, cpu, idle_cpu


def check(url: str, ids: list[str], report: dict[str, object]) -> None:
    """Every cancel persisted: accepted, one attempt each, the Batch cancelling, events."""
    n = len(ids)
    db = Database.connect(url)
    with db.transaction() as s:
        grouped = s.execute(select(CancelRequest.state, func.count()).group_by(CancelRequest.state))
        states = {str(state): int(count) for state, count in grouped}
        attempts = s.scalar(select(func.count()).select_from(CancelAttempt))
        cancelling = s.scalar(select(func.count()).where(Batch.status == "cancelling"))
        with_events = s.scalar(select(func.count(distinct(BatchEvent.batch_id))))
    db.dispose()
    if (states, attempts, cancelling, with_events, report.get("accepted")) != (
        {"accepted": n},
        n,
        n,
        n,
        n,
    ):
        raise SystemExit(
            f"lost work: states {states}, {attempts} attempts, {cancelling} cancelling, "
            f"{with_events} with events, for {n} ids; report {report}"
        )


def prepare(sim: RunningSimulator, n: int) -> list[str]:
    """N batches, each cancelled once (so every arm finds them ``cancelling``)."""
    ids = sim.create_batches(
        n, requests=10, age_s=10, scenario={"cancelling_s": 1e6, "running_s": 1e6}
    )
    with sim.control() as http, ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: http.post(f"/v1/batches/{i}/cancel").raise_for_status(),
                ids,
            )
        )
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000, help="cancels per run (default 2000)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds added per cancel")
    parser.add_argument("--width", type=int, default=32, help="threads / concurrency (32)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each arm (default 3)")
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    arms = [Arm(PEER)] + [Arm(b) for b in args.backends.split(",")]
    loads = [load()]
    with simulator() as sim, tempfile.TemporaryDirectory() as tmp:
        ids = prepare(sim, args.n)
        ids_file = str(Path(tmp) / "ids.txt")
        Path(ids_file).write_text("\n".join(ids) + "\n")
        sim.add_fault(kind="slow", endpoint="cancel", delay_s=args.latency, times=None)
        print(
            f"N={args.n}, {args.latency * 1000:g} ms added per cancel, width {args.width}, "
            f"{args.rounds} round(s); bound N x latency / width = "
            f"{args.n * args.latency / args.width:.2f}s; load {loads[0]}",
            flush=True,
        )
        for r in range(args.rounds):
            order = arms[r % len(arms) :] + arms[: r % len(arms)]
            for arm in order:
                idle = ""
                if arm.name == PEER:
                    seconds, cpu = run_peer(sim, ids_file, args.width)
                else:
                    seconds, cpu, idle_cpu = run_ours(sim, arm.name, ids, args.width, f"_s{r}")
                    arm.idle_cpu.append(idle_cpu)
                    idle = f", {idle_cpu:.2f}s of it start-up and exit"
                arm.seconds.append(seconds)
                arm.cpu.append(cpu)
                print(
                    f"  round {r + 1} {arm.name:24} {seconds:6.2f}s  CPU {cpu:.2f}s{idle}  "
                    f"(load {load()})",
                    flush=True,
                )
            loads.append(load())
    peer = arms[0]
    print(f"\nload average (1, 5, 15 min) at the start and after each round: {' | '.join(loads)}")
    print(
        "| arm | median s | min s | ratio ours / peer | CPU ms per cancel: process | "
        "less start-up and exit |"
    )
    print("|---|---|---|---|---|---|")
    for arm in arms:
        whole, work = arm.cpu_ms(args.n)
        print(
            f"| {arm.name} | {arm.median():.2f} | {min(arm.seconds):.2f} | "
            f"{arm.median() / peer.median():.2f}x | {whole:.2f} | "
            f"{'' if work is None else f'{work:.2f}'} |"
        )
    for arm in arms[1:]:
        whole, work = arm.cpu_ms(args.n)
        assert work is not None
        fast = "met" if arm.median() <= peer.median() else "NOT met"
        cheap = "met" if work <= TARGET_CPU_MS else "NOT met"
        print(
            f"{arm.name}: {arm.median() / peer.median():.2f}x the peer's time ({fast}); "
            f"{work:.2f} ms CPU per cancel less start-up ({whole:.2f} with it), "
            f"target <= {TARGET_CPU_MS} ({cheap})"
        )


if __name__ == "__main__":
    main()

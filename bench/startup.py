"""Start-up benchmark: process start to exit, side by side in one run.

    .venv/bin/python -m bench.startup            # 20 rounds
    .venv/bin/python -m bench.startup --rounds 40

Each round runs every command once, in turn, so a busy host slows them alike:

- floor: `python -c pass`, the interpreter with this environment's site-packages;
- peer: the official client's start-up, `import openai; openai.OpenAI(...)` (the
  installed `openai` package ships no command line, so there is no `openai --help`);
- `orchestrator --help`;
- `orchestrator status` on an empty, migrated SQLite database;
- what `status` cannot do without: `python -c "import sqlite3"` (on SQLite it reads
  through sqlite3 alone, db/sqlite_reader.py);
- for reference, what it no longer imports: `python -c "import sqlalchemy.orm, sqlite3"`
  (every other command that opens the database does).

Bytecode is cached as in any installed package (PYTHONDONTWRITEBYTECODE is unset for
the children; a warm-up run of each writes it). Prints median, p90 and min per
command, the ratios of medians (ours / floor, ours / peer), and the median CPU time
(user + system) of each: on a shared host wall time waits for the CPU, CPU time less so.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 0.35
BIN = Path(sys.executable).parent


def commands(database_url: str) -> dict[str, list[str]]:
    orchestrator = str(BIN / "orchestrator")
    return {
        "python -c pass (floor)": [sys.executable, "-c", "pass"],
        "openai client start (peer)": [
            sys.executable,
            "-c",
            "import openai; openai.OpenAI(api_key='sk-bench')",
        ],
        "orchestrator --help": [orchestrator, "--help"],
        "orchestrator status (empty db)": [orchestrator, "--database-url", database_url, "status"],
        "import sqlite3": [sys.executable, "-c", "import sqlite3"],
        "import sqlalchemy.orm, sqlite3": [sys.executable, "-c", "import sqlalchemy.orm, sqlite3"],
    }


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one run, from process start to exit."""
    cpu = cpu_of_children()
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=60, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed, cpu_of_children() - cpu


def load() -> str:
    return " ".join(f"{n:.1f}" for n in os.getloadavg())


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20, help="runs of each command (default 20)")
    rounds = parser.parse_args().rounds
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONDONTWRITE", "ORCH"))}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as cwd:  # no config file here
        url = f"sqlite:///{cwd}/empty.sqlite3"
        run_once([str(BIN / "orchestrator"), "--database-url", url, "db", "upgrade"], env, cwd)
        timed = commands(url)
        for argv in timed.values():  # warm-up: bytecode written, files in the page cache
            run_once(argv, env, cwd)
        seconds: dict[str, list[float]] = {name: [] for name in timed}
        cpu: dict[str, list[float]] = {name: [] for name in timed}
        for _ in range(rounds):
            for name, argv in timed.items():
                wall, used = run_once(argv, env, cwd)
                seconds[name].append(wall)
                cpu[name].append(used)
    report(seconds, cpu, rounds)


def report(seconds: dict[str, list[float]], cpu: dict[str, list[float]], rounds: int) -> None:
    median = {name: statistics.median(values) for name, values in seconds.items()}
    floor, peer = (median[name] for name in list(seconds)[:2])
    print(f"{rounds} rounds, each command once a round, in turn (seconds; load {load()})")
    print(
        f"{'command':32} {'median':>7} {'p90':>7} {'min':>7} {'/floor':>7} {'/peer':>7} {'cpu':>7}"
    )
    for name, values in seconds.items():
        print(
            f"{name:32} {median[name]:7.3f} {p90(values):7.3f} {min(values):7.3f} "
            f"{median[name] / floor:6.2f}x {median[name] / peer:6.2f}x "
            f"{statistics.median(cpu[name]):7.3f}"
        )
    ours = list(seconds)[2:4]
    bound = median[list(seconds)[4]]
    status = median[ours[1]]
    print(f"status / its unavoidable import (sqlite3): {status / bound:.2f}x")
    for name in ours:
        verdict = "met" if median[name] <= TARGET_SECONDS else "NOT met"
        print(f"{name}: median {median[name]:.3f} s, target <= {TARGET_SECONDS} s: {verdict}")


if __name__ == "__main__":
    main()

"""What the benchmarks share: a simulator in its own process, scratch databases."""

from __future__ import annotations

import glob
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy.engine import make_url

from orchestrator.db import migrate
from orchestrator.db.engine import make_engine

SIM_KEY = "sk-sim-bench"
PG_URL = os.environ.get(
    "ORCHESTRATOR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def faketime_env(minutes: float) -> dict[str, str]:
    """Environment variables that run a process with its wall clock ``minutes`` off.

    libfaketime (Debian's ``faketime``) is preloaded straight into the process: the
    ``faketime`` wrapper forks, so a signal sent to it would miss the process itself.
    Monotonic clocks are left alone, as on a host whose wall clock is merely wrong.
    """
    if not minutes:
        return {}
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        raise RuntimeError("libfaketime not found: apt-get install faketime")
    shim = str(Path(__file__).resolve().parent / "faketime_shim")  # time.sleep, see there
    return {
        "LD_PRELOAD": found[0],
        "FAKETIME": f"{minutes:+g}m",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (shim, os.environ.get("PYTHONPATH")) if p),
    }


@dataclass
class RunningSimulator:
    url: str  # .../v1
    root: str
    process: subprocess.Popen[str]

    def control(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.root, headers={"Authorization": f"Bearer {SIM_KEY}"}, timeout=30
        )

    def create_batches(self, count: int, **body: Any) -> list[str]:
        with self.control() as http:
            return [
                http.post("/_sim/batches", json=body).raise_for_status().json()["id"]
                for _ in range(count)
            ]

    def add_fault(self, **rule: Any) -> None:
        with self.control() as http:
            http.post("/_sim/faults", json=rule).raise_for_status()

    def clear_faults(self) -> None:
        with self.control() as http:
            http.delete("/_sim/faults").raise_for_status()

    def counters(self) -> dict[str, Any]:
        with self.control() as http:
            result: dict[str, Any] = http.get("/_sim/counters").raise_for_status().json()
            return result


def free_port() -> int:
    """A loopback port free right now (for a process to bind a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds used so far: by the machine (all cores), and by one process."""

    machine: float
    process: float

    @staticmethod
    def take(pid: int) -> CpuSample:
        """From /proc (Linux): utime+stime of `pid`, busy time of every core."""
        ticks = os.sysconf("SC_CLK_TCK")
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        # Not steal: that is time the hypervisor gave to other guests, not work done here.
        user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
        busy = user + nice + system + irq + softirq
        stat = Path(f"/proc/{pid}/stat").read_text()
        own = stat[stat.rindex(")") + 2 :].split()
        return CpuSample(busy / ticks, (int(own[11]) + int(own[12])) / ticks)


@contextmanager
def simulator(
    time_scale: float = 1.0,
    *,
    webhook_urls: tuple[str, ...] = (),
    webhook_secret: str = "",
    seed: int | None = None,
    rate_limit: float | None = None,
) -> Iterator[RunningSimulator]:
    """The simulator in a separate process, so it does not share our GIL; with
    ``webhook_urls`` it sends signed events there (signed with ``webhook_secret``);
    with ``rate_limit``, in rate-limit mode (requests a second per key)."""
    command = [
        sys.executable,
        "-m",
        "orchestrator.simulator",
        "--port",
        "0",
        "--api-key",
        SIM_KEY,
        "--time-scale",
        str(time_scale),
    ]
    for url in webhook_urls:
        command += ["--webhook-url", url]
    if seed is not None:
        command += ["--seed", str(seed)]
    if rate_limit is not None:
        command += ["--rate-limit", str(rate_limit)]
    env = {**os.environ, "OPENAI_WEBHOOK_SECRET": webhook_secret}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"(http://[\d.]+:\d+)/v1", line)
        if not match:
            raise RuntimeError(f"simulator did not start: {line!r}")
        yield RunningSimulator(url=match.group(0), root=match.group(1), process=process)
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def scratch_database(backend: str, tag: str = "") -> Iterator[str]:
    """A freshly migrated database URL on `sqlite` or `postgres`, dropped afterwards
    (``tag`` tells apart several at once)."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
            _migrate(url)
            yield url
        return
    admin = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    # ORCHESTRATOR_BENCH_DB_PREFIX: a name of one's own on a server others clean up too
    prefix = os.environ.get("ORCHESTRATOR_BENCH_DB_PREFIX", "orch_bench")
    name = f"{prefix}_{os.getpid()}{tag}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    target = make_url(PG_URL).set(drivername="postgresql+psycopg", database=name)
    rendered = target.render_as_string(hide_password=False)
    _migrate(rendered)
    try:
        yield rendered
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrate(url: str) -> None:
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()

"""Running the simulator as a process: ``run_simulator`` blocks until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

from orchestrator.cli.simulate_args import add_rate_limit_argument, add_webhook_argument
from orchestrator.clock import Clock, SystemClock

from .config import DEFAULT_API_KEY, SimulatorConfig
from .faults import load_faults
from .scenario import Scenario
from .server import SimulatorServer
from .state import Simulator

WEBHOOK_SECRET_ENV = "OPENAI_WEBHOOK_SECRET"


def run_simulator(
    host: str = "127.0.0.1",
    port: int = 8089,
    api_key: str = DEFAULT_API_KEY,
    time_scale: float = 1.0,
    faults_file: Path | None = None,
    seed: int | None = None,
    *,
    scenario: Scenario | None = None,
    verbose: bool = False,
    webhook_urls: tuple[str, ...] = (),
    rate_limit: float | None = None,
    clock: Clock | None = None,
    stop: threading.Event | None = None,
    out: TextIO | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or until ``stop`` is set); print the URL and the key.

    Raises ``ValueError`` for a bad setting or fault file and ``OSError`` if the port is taken.
    """
    out = out or sys.stdout
    config = SimulatorConfig(
        api_key=api_key,
        time_scale=time_scale,
        seed=seed,
        verbose=verbose,
        scenario=scenario or Scenario(),
        webhook_urls=webhook_urls,
        rate_limit_per_second=rate_limit,
        # the receiver's secret list; the first one signs (a rotation adds the new one first)
        webhook_secret=os.environ.get(WEBHOOK_SECRET_ENV, "").split(",")[0].strip(),
    )
    simulator = Simulator(config, clock or SystemClock())
    rules = load_faults(faults_file) if faults_file is not None else []
    simulator.add_faults(rules)
    stop = stop or threading.Event()
    with SimulatorServer(simulator, host, port) as server:
        print(f"Batch API simulator listening on {server.url}", file=out)
        print(f"  OPENAI_BASE_URL={server.url}", file=out)
        print(f"  OPENAI_API_KEY={api_key}", file=out)
        print(f"  control: {server.root_url}/_sim/  (same key)", file=out)
        print(f"  time scale: {time_scale:g}   faults loaded: {len(rules)}", file=out)
        for url in webhook_urls:
            print(f"  webhooks to: {url}", file=out)
        if rate_limit is not None:
            print(f"  rate limit: {rate_limit:g} requests/s per key (429 past it)", file=out)
        print("Press Ctrl+C to stop.", file=out, flush=True)
        _wait(stop)
    print("Simulator stopped.", file=out, flush=True)


def _wait(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        stop.wait()
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):  # a timed wait lets the signal handler run promptly
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.simulator",
        description="A local OpenAI Batch API with fault injection.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089, help="0 picks a free port")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--faults", type=Path, default=None, help="JSON file of fault rules")
    parser.add_argument(
        "--seed", type=int, default=None, help="reproducible ids and probabilistic faults"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    add_webhook_argument(parser)
    add_rate_limit_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run_simulator(
            args.host,
            args.port,
            args.api_key,
            args.time_scale,
            args.faults,
            args.seed,
            verbose=args.verbose,
            webhook_urls=tuple(args.webhook_url),
            rate_limit=args.rate_limit,
        )
    except (ValueError, OSError) as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    return 0

"""`orchestrator simulate`: the arguments (what it does: simulate_command)."""

from __future__ import annotations

import argparse
from pathlib import Path

# orchestrator.simulator.DEFAULT_API_KEY, spelled out: importing the simulator here would
# slow every command's start (tests/unit/test_cli_startup.py keeps the two equal).
DEFAULT_API_KEY = "sk-sim-local"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sim = commands.add_parser(
        "simulate",
        help="serve a local fake Batch API with fault injection (see docs/simulator.md)",
        description=(
            "Serve the Batch API endpoints the orchestrator uses, with a real lifecycle on a "
            "compressible clock and switchable faults. Point OPENAI_BASE_URL at the printed "
            "URL and use the printed key. Control endpoints live under /_sim/."
        ),
    )
    sim.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    sim.add_argument(
        "--port", type=int, default=8089, help="port (default 8089; 0 picks a free one)"
    )
    sim.add_argument(
        "--api-key",
        default=DEFAULT_API_KEY,
        help=f"the key clients must send (default {DEFAULT_API_KEY}, not a real key)",
    )
    sim.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="divide every lifecycle duration by this (default 1; 60: 10 minutes take 10 s)",
    )
    sim.add_argument("--faults", type=Path, help="JSON file of fault rules to start with")
    sim.add_argument("--seed", type=int, help="seed ids and probabilistic faults")
    sim.add_argument("--verbose", action="store_true", help="log every request")
    add_webhook_argument(sim)
    add_rate_limit_argument(sim)
    sim.set_defaults(handler="simulate_command.run", needs_schema=False)


def add_webhook_argument(parser: argparse.ArgumentParser) -> None:
    """--webhook-url, here and for `python -m orchestrator.simulator`."""
    parser.add_argument(
        "--webhook-url",
        action="append",
        default=[],
        metavar="URL",
        help="POST signed batch.* events here when a batch ends (repeatable); signed with "
        "the first secret in OPENAI_WEBHOOK_SECRET",
    )


def add_rate_limit_argument(parser: argparse.ArgumentParser) -> None:
    """--rate-limit, here and for `python -m orchestrator.simulator`."""
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="RPS",
        help="rate-limit mode: answer 429 with Retry-After past RPS requests a second per key",
    )

"""The worker's sender alone: CPU per cancel of the HTTP side, without the database.

    .venv/bin/python -m bench.cancel_sender --n 2000 --rounds 3
    .venv/bin/python -m bench.cancel_sender --n 2000 --rounds 3 --latency 0.1

N cancels through what the worker's sender runs for each (``AsyncSender``, the async
client metered as ``orchestrator worker`` wires it, ``parse_batch`` of the answer)
against the simulator in a process of its own, with no latency added, or with
``--latency`` seconds added to each cancel: then answers come one at a time, as in
the worker beside the issue's fan-out (each wakes the loop on its own). Printed per
round: wall seconds and this process's CPU ms per cancel (the simulator's CPU is not
in it). A first round warms up (connections, imports) and is not printed. To compare
two checkouts, run it from each (``cd`` there: the bench imports its cwd's code).
"""

from __future__ import annotations

import argparse
import functools
import os
import time

from bench.cancel_fanout import prepare
from bench.harness import SIM_KEY, simulator
from orchestrator.api.async_client import AsyncBatchApiClient
from orchestrator.api.settings import ApiSettings
from orchestrator.core.observation import BatchObservation, parse_batch
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.metrics import Metrics
from orchestrator.processes.sender import AsyncSender
from orchestrator.secret import Secret


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000, help="cancels per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds measured (default 3)")
    parser.add_argument("--width", type=int, default=32, help="sends at once (default 32)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per cancel")
    args = parser.parse_args()
    with simulator() as sim:
        ids = prepare(sim, args.n)
        if args.latency:
            sim.add_fault(kind="slow", endpoint="cancel", delay_s=args.latency, times=None)
        metrics = Metrics()
        client = AsyncBatchApiClient(
            ApiSettings(api_key=Secret(SIM_KEY), base_url=sim.url),
            policy=RetryPolicy(),
            max_connections=args.width,
            wrap=metrics.metered,
        )

        async def send(batch_id: str) -> BatchObservation:
            result = await client.cancel(batch_id)
            return parse_batch(result.data, expected_id=batch_id)

        with AsyncSender(args.width, close_with=client.aclose) as sender:
            for round_ in range(args.rounds + 1):
                cpu, wall = time.process_time(), time.perf_counter()
                futures = sender.submit_all([functools.partial(send, i) for i in ids])
                sender.wait_finished(args.n, timeout=600)  # as the worker waits
                for future in futures:
                    future.result()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                if round_:
                    print(
                        f"round {round_}: {args.n} cancels, {wall:.2f}s, "
                        f"CPU {cpu * 1000 / args.n:.3f} ms per cancel "
                        f"(load {os.getloadavg()[0]:.1f})",
                        flush=True,
                    )


if __name__ == "__main__":
    main()

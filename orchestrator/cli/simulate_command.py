"""`orchestrator simulate`: the local Batch API simulator, for tests and rehearsals."""

from __future__ import annotations

from orchestrator.cli.context import Context, Exit
from orchestrator.simulator import run_simulator


def run(ctx: Context) -> Exit:
    a = ctx.args
    try:
        run_simulator(
            a.host,
            a.port,
            a.api_key,
            a.time_scale,
            a.faults,
            a.seed,
            verbose=a.verbose,
            webhook_urls=tuple(a.webhook_url),
            rate_limit=a.rate_limit,
        )
    except (ValueError, OSError) as exc:
        ctx.err.print(f"orchestrator simulate: {exc}")
        return Exit.USAGE
    return Exit.OK

"""Asking a person before a command changes many batches (bulk cancel, forget)."""

from __future__ import annotations

import sys

from orchestrator.cli.context import Context, Exit


def refusal(ctx: Context, verb: str, count: int) -> Exit | None:
    """None when a person typed yes; else the exit code, and nothing is to be done.
    Without a terminal there is nobody to ask: refused unless --yes (exit 2)."""
    if not sys.stdin.isatty():
        ctx.err.print(
            f"refusing to {verb} {count} batch(es) without a confirmation: "
            "stdin is not a terminal. Re-run with --yes to go ahead, or --dry-run to see "
            "the plan only.",
            markup=False,
        )
        return Exit.USAGE
    ctx.err.print(f"{verb} these {count} batch(es)? type yes to go on: ", end="")
    answer = sys.stdin.readline().strip().lower()
    if answer in ("y", "yes"):
        return None
    ctx.err.print(f"not confirmed: nothing was done (no batch to {verb})")
    return Exit.ATTENTION

"""`orchestrator cleanup` and `orchestrator prune`: the arguments (what they do:
upkeep_commands)."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.cli.output import REPORTS, add_output_arguments
from orchestrator.cli.selection import parse_duration


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cleanup = commands.add_parser(
        "cleanup",
        help="delete result files from the API once every line of them is stored",
        description=(
            "Delete the output and error files of every batch whose harvest is complete and "
            "verified (lines and sha256 recorded) with DELETE /files/{id}; with --input-files "
            "(or ORCHESTRATOR_CLEANUP_INPUT_FILES) its input file too, once no tracked batch "
            "that uses it still needs it. Never a file of a harvest that is not complete. "
            "Every deletion is recorded in file_deletions; a failed one is retried with "
            "backoff. Exit 1 if a deletion was refused."
        ),
    )
    cleanup.add_argument(
        "--dry-run", action="store_true", help="list what would be deleted; delete nothing"
    )
    cleanup.add_argument(
        "--input-files", action="store_true", help="delete input files too (once unused)"
    )
    add_output_arguments(cleanup, REPORTS, limit=False)
    cleanup.set_defaults(handler="upkeep_commands.run_cleanup")

    prune = commands.add_parser(
        "prune",
        help="remove old result rows and events of batches that ended",
        description=(
            "Remove batch_results, result_line_errors and batch_events rows of batches that "
            "ended (terminal, harvest finished) longer ago than --older-than, by the "
            "database's clock, in short transactions. Batches, their cancel requests and "
            "attempts, and result_files (lines, bytes, sha256) are kept. With --archive the "
            "results are first written to a new gzip-compressed JSONL file."
        ),
    )
    prune.add_argument(
        "--older-than",
        type=parse_duration,
        metavar="AGE",
        help="e.g. 30d or 12w (default: ORCHESTRATOR_RETENTION_DAYS)",
    )
    prune.add_argument("--dry-run", action="store_true", help="count what would go; remove nothing")
    prune.add_argument(
        "--archive",
        type=Path,
        metavar="FILE.jsonl.gz",
        help="write the results to this new file first (never overwritten)",
    )
    add_output_arguments(prune, REPORTS, limit=False)
    prune.set_defaults(handler="upkeep_commands.run_prune")

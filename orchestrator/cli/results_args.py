"""`orchestrator results`: the arguments (what it does: results_commands)."""

from __future__ import annotations

import argparse

from orchestrator.cli.output import add_output_arguments, retire
from orchestrator.cli.selection import add_selector_arguments

FORMATS = ("jsonl", "json", "csv", "table")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    results = commands.add_parser(
        "results",
        help="export stored results of a batch, or of the batches a selector chooses",
        description=(
            "Write every stored result of one batch, one per request, in custom_id order: "
            "the output file's responses and the error file's failures. Or, with selector "
            "flags instead of BATCH_ID, of every batch they choose (oldest first), each row "
            "led by its batch_id. Streams from the database a page at a time, so any size "
            "fits. -o names the format (jsonl, the default; json, one document; csv; table, "
            "for a person), --to the file, which appears only once complete. Exit 4 if the "
            "batch is not tracked."
        ),
        epilog=(
            "CSV is for spreadsheets: every cell is quoted, and a cell that begins with "
            "= + - @ or a tab, CR or LF gets a leading ' so a spreadsheet shows it as text "
            "instead of running it as a formula (strip that ' to get the stored value; "
            "-o jsonl has every value exactly as stored)."
        ),
    )
    results.add_argument(
        "batch_id",
        nargs="?",
        metavar="BATCH_ID",
        help="the batch id, or enough of its beginning to name one tracked batch "
        "(or leave it out and select batches)",
    )
    add_output_arguments(
        results,
        FORMATS,
        default="jsonl",
        hint="-o names the format; to write to a file say --to {text}",
        limit_of="results",
    )
    # Before one output scheme, --format was the format and --output the file.
    retire(results, "--format", "the format is -o FORMAT (-o csv, -o jsonl, -o json, -o table)")
    results.add_argument(
        "--complete-only",
        action="store_true",
        help="export only once every file of the batch is harvested; else write nothing "
        "and exit 1 (for scripts that must not act on part of the results)",
    )
    results.add_argument(
        "--kind",
        choices=("output", "error"),
        help="only lines from the output file, or only from the error file",
    )
    results.add_argument(
        "--to",
        metavar="PATH",
        help="write to this file (`-`: stdout, the default), which appears only once "
        "complete; an existing file is not replaced without --force",
    )
    results.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --to file (never a link, directory or device)",
    )
    add_selector_arguments(results, "choosing batches instead of naming one")
    results.set_defaults(handler="results_commands.run_results")

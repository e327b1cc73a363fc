"""The output scheme of every listing command: `-o table|wide|json|jsonl|ids`, `--limit`.

- `table` (the default) for a person; `wide` adds the columns a person asks second
  (created, endpoint, model, metadata); both stop at DEFAULT_LIMIT rows unless told.
- `json` is one document, `jsonl` one record a line, `ids` one batch id a line (it
  pipes into `orchestrator cancel -`); these are for programs and have no default limit.
- `--json` is kept as the same as `-o json`. `--limit 0` means no limit.
"""

from __future__ import annotations

import argparse

from orchestrator.cli.selection import MAX_COUNT

FORMATS = ("table", "wide", "json", "jsonl", "ids")
FOR_PEOPLE = ("table", "wide")
DEFAULT_LIMIT = 50


def add_output_arguments(
    parser: argparse.ArgumentParser, formats: tuple[str, ...] = FORMATS, *, limit: bool = True
) -> None:
    parser.add_argument(
        "-o",
        "--output",
        dest="output_format",
        choices=formats,
        default="table",
        metavar="FORMAT",
        help=f"{' | '.join(formats)} (default table)"
        + ("; ids: one batch id a line, for `orchestrator cancel -`" if "ids" in formats else ""),
    )
    parser.add_argument(
        "--json", dest="output_format", action="store_const", const="json", help="= -o json"
    )
    if limit:
        parser.add_argument(
            "--limit",
            type=limit_count,
            default=None,
            metavar="N",
            help=f"at most N batches; 0: all (default: {DEFAULT_LIMIT} in a table, all "
            "in json, jsonl and ids); the rest are counted",
        )


def limit_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a whole number from 0 (no limit) to {MAX_COUNT:,}"
        )
    return value


def row_limit(args: argparse.Namespace) -> int | None:
    """How many rows to show; None for all."""
    if args.limit is None:
        return DEFAULT_LIMIT if args.output_format in FOR_PEOPLE else None
    return args.limit or None

"""One output scheme on every command: `-o/--output FORMAT`, `--json`, `--limit`.

- `table` (the default, except for `results`) is for a person; `wide` (on `status`)
  adds the columns a person asks second (created, endpoint, model, metadata). Tables
  of batches stop at DEFAULT_LIMIT rows unless told.
- `json` is one document, `jsonl` one record a line (a batch, or a result of
  `results`), `ids` one batch id a line (it pipes into `orchestrator cancel -`);
  `csv` (on `results`) one row a line. These are for programs: no default limit.
- `--json` is kept as the same as `-o json` on every command that has `-o`.
- `--limit 0` means no limit.

Each command names the formats it has (`BATCH_LISTS` for a command that lists
batches); `-o` means the format everywhere. A spelling retired on the way here says
what replaced it (`retire`), rather than being read with another meaning.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any, NoReturn

from orchestrator.cli.selection import MAX_COUNT
from orchestrator.core.visible import visible

if TYPE_CHECKING:
    from orchestrator.cli.context import Context

FORMATS = ("table", "wide", "json", "jsonl", "ids")
FOR_PEOPLE = ("table", "wide")
# A command that lists batches, or plans or reports on some (cancel, track, forget).
BATCH_LISTS = ("table", "json", "jsonl", "ids")
# A command that reports one thing (a summary, a health check, a setting).
REPORTS = ("table", "json")
DEFAULT_LIMIT = 50


class output_format:  # lower case: an argparse type, like `int`
    """An argparse type: one of `formats`. The formats stay on it as `choices` for
    shell completion; a value that is none of them is told what -o means now (`hint`)."""

    def __init__(self, formats: tuple[str, ...], hint: str = "") -> None:
        self.choices = formats
        self.hint = hint

    def __call__(self, text: str) -> str:
        if text not in self.choices:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an output format: {' | '.join(self.choices)}"
                + (f" ({self.hint.format(text=visible(text))})" if self.hint else "")
            )
        return text


def add_output_arguments(
    parser: argparse.ArgumentParser,
    formats: tuple[str, ...] = FORMATS,
    *,
    limit: bool = True,
    default: str = "table",
    hint: str = "",
    limit_of: str = "batches",
) -> None:
    """`-o/--output FORMAT` and `--json` (= `-o json`); `--limit N` when `limit`."""
    described = f"{' | '.join(formats)} (default {default})"
    if "ids" in formats:
        described += "; ids: one batch id a line, for `orchestrator cancel -`"
    parser.add_argument(
        "-o",
        "--output",
        dest="output_format",
        type=output_format(formats, hint),
        default=default,
        metavar="FORMAT",
        help=described,
    )
    if "json" in formats:
        parser.add_argument(
            "--json", dest="output_format", action="store_const", const="json", help="= -o json"
        )
    if limit:
        machine = ", ".join(f for f in formats if f not in FOR_PEOPLE)
        parser.add_argument(
            "--limit",
            type=limit_count,
            default=None,
            metavar="N",
            help=f"at most N {limit_of}; 0: all (default: {DEFAULT_LIMIT} in a table, all "
            f"in {machine})"
            + ("; the rest are counted" if limit_of == "batches" else "; a table says so"),
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


class _Retired(argparse.Action):
    """A flag whose spelling is gone: using it is an error that names what replaced it
    (its `const`)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> NoReturn:
        parser.error(f"{option_string} is gone: {self.const}")


def retire(parser: argparse.ArgumentParser, flag: str, instead: str) -> None:
    """`flag` (with or without a value) is refused, saying `instead`; it is in no --help
    nor completion (argparse.SUPPRESS)."""
    parser.add_argument(
        flag,
        action=_Retired,
        nargs="?",
        const=instead,
        dest=f"retired_{flag.lstrip('-').replace('-', '_')}",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


def record(batch_id: str, result: str, *, listed: bool = True, **more: object) -> dict[str, Any]:
    """One batch's line of `-o jsonl`: its id, what the command did to it (`result`),
    and `more`; `listed=False` leaves it out of `-o ids` (a batch skipped or kept)."""
    return {"batch_id": batch_id, "result": result, **more, "listed": listed}


def fields_of(row: Any) -> dict[str, Any]:
    """A dataclass row's fields by name, each value as it is: not ``asdict``, which
    copies every value all the way down (a stored body may nest hundreds of levels,
    and a listing writes 100,000 rows)."""
    kind = type(row)
    names = _FIELD_NAMES.get(kind)
    if names is None:
        names = _FIELD_NAMES[kind] = tuple(field.name for field in fields(kind))
    return {name: getattr(row, name) for name in names}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # by dataclass: a listing asks 100,000 times


def for_a_person(ctx: Context) -> bool:
    return ctx.output_format in FOR_PEOPLE


def emit(ctx: Context, document: Mapping[str, Any], records: Iterable[Mapping[str, Any]]) -> bool:
    """The machine formats of a command that reports on batches: `json` the whole
    `document`, `jsonl` each of `records` (one per batch, each with its `batch_id`),
    `ids` the `batch_id` of each record whose `listed` is not False (the batches the
    command did, or would do, its work on). False for a person's format: print a table."""
    fmt = ctx.output_format
    if fmt == "json":
        ctx.emit_json(dict(document))
    elif fmt == "jsonl":
        for record in records:
            ctx.emit_json_line({k: v for k, v in record.items() if k != "listed"})
    elif fmt == "ids":
        ctx.emit_lines(str(r["batch_id"]) for r in records if r.get("listed", True))
    else:
        return False
    return True

"""What every command gets: settings, output helpers, and the exit codes.

Light on purpose (every command imports it): rich and the database are imported
when a command first prints or connects."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, TextIO

from orchestrator.core.visible import visible
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

    from orchestrator.db.database import Database


class Exit(IntEnum):
    OK = 0
    ATTENTION = 1  # the command ran, and something needs a person (details printed)
    USAGE = 2  # bad arguments or settings
    DATABASE = 3  # database unreachable, busy or not migrated
    NOT_FOUND = 4  # an unknown batch
    INTERRUPTED = 130


log = logging.getLogger("orchestrator.cli")

# Piped or redirected output is read by people too (less, files, CI logs): do not
# squeeze tables into 80 columns there. COLUMNS still wins when set.
PIPED_WIDTH = 160


def _console(stream: TextIO, *, stderr: bool) -> Console:
    from rich.console import Console

    class PipeConsole(Console):
        """A Console that lets a closed pipe reach `main` (exit 0), not exit 1 itself."""

        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    width = None if stream.isatty() or os.environ.get("COLUMNS") else PIPED_WIDTH
    if os.environ.get("NO_COLOR"):
        # https://no-color.org asks for no colour; rich drops only the colour and keeps
        # bold and reverse. No styles at all: a person who asked for none gets none.
        return PipeConsole(stderr=stderr, highlight=False, width=width, color_system=None)
    return PipeConsole(stderr=stderr, highlight=False, width=width)


def _json_default(value: object) -> str:
    """``json.dumps``'s ``default`` for every JSON this command line writes: a time as
    ISO 8601 text. Through ``default``, not a copy of the value made first: with no
    indent the C encoder then writes all of it (`-o jsonl` over 100,000 batches)."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass
class Context:
    settings: Settings
    # Not in the repr: `--database-url` is kept here as typed, password and all
    # (the settings' repr shows the URL with it hidden).
    args: argparse.Namespace = field(repr=False)

    @cached_property
    def out(self) -> Console:
        return _console(sys.stdout, stderr=False)

    @cached_property
    def err(self) -> Console:
        return _console(sys.stderr, stderr=True)

    @property
    def output_format(self) -> str:
        """`-o FORMAT` (cli/output.py); "json" for a command with only `--json`."""
        given = getattr(self.args, "output_format", None)
        if given is not None:
            return str(given)
        return "json" if getattr(self.args, "json", False) else "table"

    @property
    def json(self) -> bool:
        return self.output_format == "json"

    def database(self, *, check_schema: bool = True, read_only: bool = False) -> Database:
        """``read_only``: for a command that only reads (on SQLite its transactions then
        never take the write lock, however long it reads)."""
        from orchestrator.db.database import Database

        return Database.connect(
            self.settings.database_url,
            pool_size=self.settings.database_pool_size,
            check_schema=check_schema,
            read_only=read_only,
        )

    def summary(self, message: str, *, level: int = logging.INFO, **fields: Any) -> None:
        """A process's closing line. Under --log-format json it is one JSON log record
        like every other line (log shippers parse them all); else plain text on
        stderr, one line however long, never wrapped."""
        if self.settings.log_format == "json":
            log.log(level, message, extra={"action": "summary", **fields})
        else:
            self.err.print(visible(message), soft_wrap=True, markup=False, highlight=False)

    def emit_json(self, value: Any) -> None:
        sys.stdout.write(json.dumps(value, indent=2, default=_json_default) + "\n")

    def emit_json_listing(
        self, key: str, items: Iterable[Any], rest: Callable[[int], dict[str, Any]]
    ) -> None:
        """`-o json` of a long listing: the object ``{key: [items...], **rest(count)}``,
        as `emit_json` writes it, each item written as it comes (never all held)."""
        out = sys.stdout
        out.write("{\n  " + json.dumps(key) + ": [")
        count = 0
        for item in items:
            text = json.dumps(item, indent=2, default=_json_default).replace("\n", "\n    ")
            out.write(("," if count else "") + "\n    " + text)
            count += 1
        out.write("\n  ]" if count else "]")
        tail = json.dumps(rest(count), indent=2, default=_json_default)  # "{\n  ...\n}"
        out.write(",\n" + tail[2:] + "\n" if tail != "{}" else "\n}\n")

    def emit_json_line(self, value: Any) -> None:
        """One record of `-o jsonl`: compact, on one line."""
        sys.stdout.write(json.dumps(value, separators=(",", ":"), default=_json_default) + "\n")

    def emit_lines(self, lines: Iterable[str]) -> None:
        """`-o ids`: one a line, nothing else (they pipe into `orchestrator cancel -`)."""
        for line in lines:
            sys.stdout.write(line + "\n")

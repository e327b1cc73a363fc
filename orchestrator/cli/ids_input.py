"""Batch ids from arguments, a file, or stdin; bad ones reported, good ones kept.

A file is read as bytes, a line at a time and never more than MAX_LINE_BYTES of
one line, so a line that is not UTF-8, or is a megabyte long, is reported with
its number and the rest still go through. More than MAX_LINES lines, or MAX_BYTES
(`--from-file /dev/zero` has one endless line), is refused whole (exit 2): recording
the first part of a list silently would lose the rest.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from orchestrator.cli.context import Context
from orchestrator.cli.selection import Selector, selector_of
from orchestrator.core.ids import validate_batch_id
from orchestrator.core.visible import visible
from orchestrator.errors import ConfigError, InvalidBatchId

ELLIPSIS = "…"  # what tables put at the end of a shortened id
MAX_LINE_BYTES = 4096  # an id is at most 128 characters; room for a comment after it
MAX_LINES = 1_000_000
MAX_BYTES = 128 << 20  # a million ids with comments fit several times over


@dataclass
class IdList:
    valid: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # messages


def report_rejected(ctx: Context, ids: IdList) -> None:
    for message in ids.rejected:
        ctx.err.print(f"rejected: {visible(message)}", markup=False)


def _read_lines(handle: BinaryIO, name: str) -> Iterator[tuple[int, bytes | None]]:
    """(line number, the line's bytes), None for a line longer than MAX_LINE_BYTES."""
    number = read = 0

    def piece(limit: int) -> bytes:
        nonlocal read
        data = handle.readline(limit)
        read += len(data)
        if read > MAX_BYTES:
            raise ConfigError(
                f"{name}: more than {MAX_BYTES >> 20} MiB; nothing was recorded (split the list)"
            )
        return data

    while line := piece(MAX_LINE_BYTES + 1):
        number += 1
        if number > MAX_LINES:
            raise ConfigError(
                f"{name}: more than {MAX_LINES:,} lines; nothing was recorded (split the list)"
            )
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := piece(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass  # skip the rest of the over-long line, a bounded piece at a time
            yield number, None
            continue
        yield number, line


def _from_source(source: str, out: IdList) -> Iterator[tuple[str, str]]:
    """(where, text) for each id-bearing line of a file (`-`: stdin); a line that
    cannot be read as text is reported in `out.rejected` with its number."""
    name = "stdin" if source == "-" else f"--from-file {source}"
    try:
        handle: BinaryIO = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        raise ConfigError(f"{name}: {exc.strerror or exc}") from None
    try:
        for number, raw in _read_lines(handle, name):
            where = f"{name} line {number}: "
            if raw is None:
                out.rejected.append(f"{where}longer than {MAX_LINE_BYTES} bytes")
                continue
            try:
                # a file saved as "UTF-8 with BOM" (Windows editors) starts with U+FEFF
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                out.rejected.append(
                    f"{where}not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
                )
                continue
            text = text.split("#", 1)[0].strip()
            if text:
                yield where, text
    except OSError as exc:
        raise ConfigError(f"{name}: {exc.strerror or exc}") from None
    finally:
        if source != "-":
            handle.close()


def collect_ids(arguments: list[str], from_file: str | None) -> IdList:
    out = IdList()
    found: list[tuple[str, str]] = []
    for argument in arguments:
        found.extend(_from_source("-", out) if argument == "-" else [("", argument.strip())])
    if from_file is not None:
        found.extend(_from_source(from_file, out))
    for where, text in found:
        try:
            # a beginning copied from a table keeps its ellipsis (`batch_1b855b2e…`)
            out.valid.append(validate_batch_id(text.removesuffix(ELLIPSIS)))
        except InvalidBatchId as exc:
            out.rejected.append(f"{where}{exc}")
    out.valid = list(dict.fromkeys(out.valid))
    return out


def ids_and_selector(ctx: Context) -> tuple[IdList, Selector] | None:
    """The ids named (bad ones reported) and the selector of a command that takes both
    (`cancel`, `forget`); None, said on stderr, when it was given neither."""
    ids = collect_ids(ctx.args.ids, ctx.args.from_file)
    report_rejected(ctx, ids)
    selector = selector_of(ctx.args)
    if selector.is_empty and not ids.valid:
        ctx.err.print("no valid batch id given, and no selector to choose batches with")
        return None
    return ids, selector

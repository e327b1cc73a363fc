"""Batch ids from arguments, a file, or stdin; bad ones reported, good ones kept."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.core.ids import validate_batch_id
from orchestrator.errors import ConfigError, InvalidBatchId


@dataclass
class IdList:
    valid: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # messages


def _lines(source: str) -> Iterable[str]:
    if source == "-":
        yield from sys.stdin
        return
    try:
        yield from Path(source).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"--from-file {source}: {exc.strerror}") from None


def collect_ids(arguments: list[str], from_file: str | None) -> IdList:
    raw: list[str] = []
    for argument in arguments:
        raw.extend(_lines("-") if argument == "-" else [argument])
    if from_file:
        raw.extend(_lines(from_file))
    out = IdList()
    for text in raw:
        text = text.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            out.valid.append(validate_batch_id(text))
        except InvalidBatchId as exc:
            out.rejected.append(str(exc))
    out.valid = list(dict.fromkeys(out.valid))
    return out

"""Filter flags shared by `status` and `cancel`: parsed here into a BatchFilter.

Durations read like `90s`, `10m`, `2h`, `1d`, `1h30m`; moments are ISO 8601
(`2026-11-24T03:00:00Z`; without a zone, UTC). Bad values are argparse errors
(exit 2) that show what was expected.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from orchestrator.core.status import UNOBSERVED, BatchStatus

STATUS_CHOICES = (*(s.value for s in BatchStatus), UNOBSERVED)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION_DAYS = 36500  # a hundred years back is before any batch; further overflows
MAX_COUNT = 1_000_000_000  # past this a count is a typo (and past 2**63 SQLite's integers)


def parse_duration(text: str) -> timedelta:
    """`90s`, `10m`, `2h`, `1d`, `1w` or a run of them (`1h30m`)."""
    compact = text.strip().lower().replace(" ", "")
    parts = list(_DURATION_PART.finditer(compact))
    if not parts or "".join(p.group(0) for p in parts) != compact:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use a number and a unit, like 90s, 10m, 2h, 1d or 1h30m"
        )
    seconds = sum(float(p.group(1)) * _UNIT_SECONDS[p.group(2)] for p in parts)
    if seconds > MAX_DURATION_DAYS * 86400:
        raise argparse.ArgumentTypeError(
            f"{text!r} is too long: at most {MAX_DURATION_DAYS} days ({MAX_DURATION_DAYS // 365}y)"
        )
    return timedelta(seconds=seconds)


def parse_moment(text: str) -> datetime:
    """An ISO 8601 date or time (UTC when it names no zone)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (10m, 2h, 1d) nor an ISO time (2026-11-24T03:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a whole number of at least 1 and at most {MAX_COUNT:,}"
        )
    return value


def text_of_at_most(limit: int) -> Callable[[str], str]:
    """An argparse type: text of at most `limit` characters (what its column holds)."""

    def parse(text: str) -> str:
        if len(text) > limit:
            raise argparse.ArgumentTypeError(
                f"expected at most {limit} characters, got {len(text):,}"
            )
        return text

    return parse


def parse_since(text: str) -> timedelta | datetime:
    """A duration back from now, or a moment."""
    try:
        return parse_duration(text)
    except argparse.ArgumentTypeError:
        if _DURATION.fullmatch(text.strip().lower().replace(" ", "")):
            raise  # a duration, too long: say that, not "not an ISO time"
        return parse_moment(text)


def since_moment(value: timedelta | datetime, now: datetime) -> datetime:
    return now - value if isinstance(value, timedelta) else value


def parse_metadata(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, like team=search")
    if '"' in key or "\\" in key:
        raise argparse.ArgumentTypeError(f'{text!r}: a metadata key cannot hold " or \\')
    return key.strip(), value


def add_status_argument(parser: argparse._ActionsContainer, help_text: str) -> None:
    parser.add_argument(
        "--status",
        action="append",
        default=[],
        choices=STATUS_CHOICES,
        metavar="STATUS",
        help=f"{help_text}; repeatable ({', '.join(STATUS_CHOICES)})",
    )


def add_metadata_argument(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--metadata",
        action="append",
        default=[],
        type=parse_metadata,
        metavar="KEY=VALUE",
        help="the batch's metadata has KEY set to VALUE; repeatable (all must match)",
    )

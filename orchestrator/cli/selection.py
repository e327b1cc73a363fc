"""The selector language: which batches `status`, `cancel`, `results` and `forget` mean.

One set of flags, one spelling and one meaning on every command (`add_selector_arguments`),
read into a `Selector`, which becomes the database's `BatchFilter` once the database
server's clock is known: ages (`--older-than 2h`) count back from the server's now,
never from the clock of the host the command runs on.

Durations read like `90s`, `10m`, `2h`, `1d`, `1h30m`; moments are ISO 8601
(`2026-11-24T03:00:00Z`; without a zone, UTC). Lists are comma-separated or the flag
repeated (`--status failed,expired` = `--status failed --status expired`). Bad values
are argparse errors (exit 2) that show what was expected.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from orchestrator.core.cancel_state import CANCEL_STATES
from orchestrator.core.status import NO_CANCEL, UNOBSERVED, BatchStatus

if TYPE_CHECKING:
    from orchestrator.db.batch_filter import BatchFilter

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
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is a moment before year 1 in UTC
        raise argparse.ArgumentTypeError(
            f"{text!r} is out of range: in UTC it falls before year 1 or after year 9999"
        ) from None


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


MAX_LIST = 100  # values in one list: a filter, not a bulk lookup (ids go to `cancel -`)
MAX_VALUE = 256  # characters of one value (a model name, an endpoint, an outcome)


class comma_list:  # lower case: an argparse type, like `int`
    """An argparse type: `a,b,c` as a list, each value one of `choices` when given.
    `choices` stays on it for shell completion (cli/completion_commands.py)."""

    def __init__(self, choices: tuple[str, ...] | None = None) -> None:
        self.choices = choices

    def __call__(self, text: str) -> list[str]:
        choices = self.choices
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"{text!r}: expected one value or a comma list")
        if len(values) > MAX_LIST:
            raise argparse.ArgumentTypeError(f"at most {MAX_LIST} values in one list")
        for value in values:
            if choices is not None and value not in choices:
                raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(choices)}")
            if len(value) > MAX_VALUE:
                raise argparse.ArgumentTypeError(f"a value longer than {MAX_VALUE} characters")
        return values


def add_status_argument(parser: argparse._ActionsContainer, help_text: str) -> None:
    parser.add_argument(
        "--status",
        action="extend",
        default=[],
        type=comma_list(STATUS_CHOICES),
        metavar="STATUS[,STATUS]",
        help=f"{help_text} ({', '.join(STATUS_CHOICES)}; "
        f"{UNOBSERVED}: tracked, never seen by the API yet)",
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


# --- the selector -------------------------------------------------------------------------

Moment = timedelta | datetime  # a duration back from the server's now, or a moment


@dataclass(frozen=True)
class Selector:
    """The selector as typed, before the server's clock turns ages into moments."""

    statuses: tuple[str, ...] = ()
    created_after: tuple[Moment, ...] = ()
    created_before: tuple[Moment, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()
    endpoints: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    cancel_states: tuple[str, ...] = ()
    cancel_requested: bool = False
    outcomes: tuple[str, ...] = ()
    overdue: bool = False
    typed: tuple[str, ...] = ()  # the flags as given, to repeat them to the operator

    @property
    def is_empty(self) -> bool:
        return not self.typed

    def describe(self) -> str:
        return " ".join(self.typed)

    def batch_filter(self, now: datetime) -> BatchFilter:
        """The database's filter; `now` is the database server's clock."""
        from orchestrator.db.batch_filter import BatchFilter

        after = [since_moment(m, now) for m in self.created_after]
        before = [since_moment(m, now) for m in self.created_before]
        return BatchFilter(
            statuses=self.statuses,
            overdue=self.overdue,
            cancel_requested=self.cancel_requested,
            cancel_states=self.cancel_states,
            cancel_outcomes=self.outcomes,
            created_after=max(after) if after else None,
            created_before=min(before) if before else None,
            metadata=self.metadata,
            endpoints=self.endpoints,
            models=self.models,
        )


# Said when a selector matched nothing in a table `orchestrator sync` never filled.
NEVER_SYNCED = (
    "note: only batches named to `cancel` or `track` are in the table: it has never been "
    "synced. `orchestrator sync` records every batch the API lists, then select again."
)
SELECTOR_HELP = (
    "Every flag given must hold; a list (comma-separated, or the flag repeated) matches "
    "any of its values. Times are the server's created_at (for a batch never seen by the "
    "API: when it was first tracked), and ages count back from the database server's "
    "clock. Only batches in the local table are seen: `orchestrator sync` records those "
    "made elsewhere."
)


# (flag, its parser, its metavar, its help): the server's created_at, from or before a moment.
TIME_FLAGS: tuple[tuple[str, Callable[[str], object], str, str], ...] = (
    (
        "--created-after",
        parse_since,
        "WHEN",
        "created at or after WHEN: an ISO time (2026-11-24T03:00Z) or an age (2h)",
    ),
    ("--created-before", parse_since, "WHEN", "created before WHEN: an ISO time or an age"),
    ("--newer-than", parse_duration, "AGE", "created less than AGE ago (90s, 10m, 2h, 1d, 1h30m)"),
    ("--older-than", parse_duration, "AGE", "created more than AGE ago"),
)


_CANCEL_CHOICES = (*CANCEL_STATES, NO_CANCEL)
# (flag, dest, the values allowed or None for any, metavar, help): lists of values.
LIST_FLAGS: tuple[tuple[str, str, tuple[str, ...] | None, str, str], ...] = (
    (
        "--endpoint",
        "endpoint",
        None,
        "ENDPOINT[,...]",
        "made for one of these endpoints (/v1/chat/completions)",
    ),
    ("--model", "model", None, "MODEL[,...]", "using one of these models"),
    (
        "--cancel",
        "cancel_state",
        _CANCEL_CHOICES,
        "STATE[,STATE]",
        f"whose cancel request is in one of these states ({', '.join(_CANCEL_CHOICES)}; "
        f"{NO_CANCEL}: never asked to cancel)",
    ),
    (
        "--outcome",
        "outcome",
        None,
        "OUTCOME[,...]",
        "whose cancel ended so (cancelled, too_late, too_late:completed, not_found, ...; "
        "too_late matches every too_late:STATUS)",
    ),
)


def add_selector_arguments(parser: argparse.ArgumentParser, title: str) -> None:
    """The selector flags, spelled and meaning the same on every command."""
    group = parser.add_argument_group(title, SELECTOR_HELP)
    add_status_argument(group, "in one of these statuses")
    for flag, parse, metavar, help_text in TIME_FLAGS:
        group.add_argument(
            flag, action="append", default=[], type=parse, metavar=metavar, help=help_text
        )
    add_metadata_argument(group)
    for flag, dest, choices, metavar, help_text in LIST_FLAGS:
        group.add_argument(
            flag,
            dest=dest,
            action="extend",
            default=[],
            type=comma_list(choices),
            metavar=metavar,
            help=help_text,
        )
    group.add_argument(
        "--cancel-requested",
        action="store_true",
        help="asked to be cancelled, in any state (= --cancel " + ",".join(CANCEL_STATES) + ")",
    )
    group.add_argument("--overdue", action="store_true", help="overdue (a cancel not landing)")


def selector_of(args: argparse.Namespace) -> Selector:
    typed = [f"--status {','.join(args.status)}"] if args.status else []
    typed += [f"--created-after {_shown(m)}" for m in args.created_after]
    typed += [f"--created-before {_shown(m)}" for m in args.created_before]
    typed += [f"--newer-than {_shown(m)}" for m in args.newer_than]
    typed += [f"--older-than {_shown(m)}" for m in args.older_than]
    typed += [f"--metadata {k}={v}" for k, v in args.metadata]
    typed += [f"--endpoint {','.join(args.endpoint)}"] if args.endpoint else []
    typed += [f"--model {','.join(args.model)}"] if args.model else []
    typed += [f"--cancel {','.join(args.cancel_state)}"] if args.cancel_state else []
    typed += ["--cancel-requested"] if args.cancel_requested else []
    typed += [f"--outcome {','.join(args.outcome)}"] if args.outcome else []
    typed += ["--overdue"] if args.overdue else []
    return Selector(
        statuses=tuple(dict.fromkeys(args.status)),
        created_after=(*args.created_after, *args.newer_than),
        created_before=(*args.created_before, *args.older_than),
        metadata=tuple(args.metadata),
        endpoints=tuple(dict.fromkeys(args.endpoint)),
        models=tuple(dict.fromkeys(args.model)),
        cancel_states=tuple(dict.fromkeys(args.cancel_state)),
        cancel_requested=args.cancel_requested,
        outcomes=tuple(dict.fromkeys(args.outcome)),
        overdue=args.overdue,
        typed=tuple(typed),
    )


def _shown(value: Moment) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    seconds = int(value.total_seconds())
    parts = [(seconds // 86400, "d"), (seconds % 86400 // 3600, "h")]
    parts += [(seconds % 3600 // 60, "m"), (seconds % 60, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"

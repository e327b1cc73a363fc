"""The batch list's filter, read from and written back to the URL.

The names are the command line's selector flags with ``_`` for ``-``, and mean the
same, parsed by the same functions into the same ``BatchFilter``: ``created_after=2h``
is ``--created-after 2h``, ``newer_than``/``older_than``/``created_before`` likewise
(the server's ``created_at``, by the database's clock), ``metadata=KEY=VALUE`` is
``--metadata KEY=VALUE`` ..., so a view and a command that say the same select the
same batches. ``since=`` (which counted from when we began tracking a batch, as
``status --since`` did) is refused naming its replacements, as on the command line.
A shared link carries the whole filter in its query string.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar
from urllib.parse import urlencode

from orchestrator.cli.selection import (
    STATUS_CHOICES,
    parse_duration,
    parse_metadata,
    parse_since,
    since_moment,
)
from orchestrator.core.cancel_state import CANCEL_STATES
from orchestrator.db.browse import SORTS
from orchestrator.db.queries import BatchFilter

DEFAULT_SORT = "newest"
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_VALUES = 20  # of one repeatable parameter: a filter, not a bulk lookup
MAX_TEXT = 256
LIMIT_TEXT = re.compile(r"[0-9]{1,3}")  # ASCII digits only: "²" is a digit to str.isdigit
# A control character (NUL among them) is in no batch's field, and PostgreSQL refuses
# NUL in a query outright: say so, as a 400, rather than fail in the database.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_T = TypeVar("_T")


SINCE_IS_GONE = (
    "since: gone; it counted from when we began tracking a batch. Select by the server's "
    "created_at with created_after=WHEN (an ISO time or an age, like 2h) or newer_than=AGE"
)


class BadSelector(ValueError):
    """A query parameter that says nothing we understand; the message names it."""


@dataclass(frozen=True)
class Selection:
    """What the list shows: the filter as typed (to redraw the form and the links)
    and the parsed ``BatchFilter``."""

    where: BatchFilter
    sort: str = DEFAULT_SORT
    limit: int = DEFAULT_LIMIT
    after: str | None = None
    typed: dict[str, list[str]] = field(default_factory=dict)

    def query(self, **changes: str | None) -> str:
        """This view's query string, with ``changes`` (None removes a parameter)."""
        pairs = [(k, v) for k, values in self.typed.items() for v in values if k not in changes]
        pairs += [(k, v) for k, v in changes.items() if v is not None]
        return urlencode(pairs)


def _checked(name: str, values: list[str]) -> list[str]:
    """``values`` if there are few enough, each short and without control characters."""
    if len(values) > MAX_VALUES:
        raise BadSelector(f"{name}: at most {MAX_VALUES} values")
    for value in values:
        if len(value) > MAX_TEXT:
            raise BadSelector(f"{name}: a value longer than {MAX_TEXT} characters")
        if CONTROL.search(value):
            raise BadSelector(f"{name}: a value holds a control character (such as NUL)")
    return values


def _all(params: Mapping[str, Sequence[str]], name: str) -> list[str]:
    """Every non-empty value of ``name``; comma lists are split, as in `--status a,b`."""
    values = [
        part.strip() for raw in params.get(name, ()) for part in raw.split(",") if part.strip()
    ]
    return _checked(name, values)


def _one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = [v.strip() for v in params.get(name, ()) if v.strip()]
    if len(values) > 1:
        raise BadSelector(f"{name}: given {len(values)} times, expected once")
    return _checked(name, values)[0] if values else None


def _parsed(name: str, text: str, parse: Callable[[str], _T]) -> _T:
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        raise BadSelector(f"{name}: {exc}") from None


def _choices(name: str, values: list[str], allowed: Sequence[str]) -> tuple[str, ...]:
    for value in values:
        if value not in allowed:
            raise BadSelector(f"{name}: {value!r} is not one of {', '.join(allowed)}")
    return tuple(dict.fromkeys(values))


def _flag(params: Mapping[str, Sequence[str]], name: str) -> bool:
    value = _one(params, name)
    if value not in (None, "1", "yes", "true", "on"):
        raise BadSelector(f"{name}: expected 1 (or leave it out), got {value!r}")
    return value is not None


def _created_range(
    params: Mapping[str, Sequence[str]], now: datetime
) -> tuple[datetime | None, datetime | None]:
    """(created at or after, created before) from created_after, newer_than,
    created_before and older_than, as the command line's selector combines them."""
    after: list[datetime] = []
    before: list[datetime] = []
    for name, parse, into in (
        ("created_after", parse_since, after),
        ("newer_than", parse_duration, after),
        ("created_before", parse_since, before),
        ("older_than", parse_duration, before),
    ):
        text = _one(params, name)
        if text is not None:
            into.append(since_moment(_parsed(name, text, parse), now))
    return (max(after) if after else None), (min(before) if before else None)


def parse_selection(params: Mapping[str, Sequence[str]], now: datetime) -> Selection:
    """The list's selection from its query parameters; ``now`` is the database's clock.

    Raises BadSelector naming the first parameter that makes no sense.
    """
    statuses = _choices("status", _all(params, "status"), STATUS_CHOICES)
    cancel_states = _choices("cancel_state", _all(params, "cancel_state"), CANCEL_STATES)
    outcomes = tuple(dict.fromkeys(_all(params, "cancel_outcome")))
    # Not comma-split: a metadata value may hold a comma (as `--metadata` is read).
    typed_metadata = _checked("metadata", [m for m in params.get("metadata", ()) if m.strip()])
    metadata = tuple(dict.fromkeys(_parsed("metadata", m, parse_metadata) for m in typed_metadata))
    if _one(params, "since") is not None:
        raise BadSelector(SINCE_IS_GONE)
    after, before = _created_range(params, now)
    sort = _one(params, "sort") or DEFAULT_SORT
    if sort not in SORTS:
        raise BadSelector(f"sort: {sort!r} is not one of {', '.join(SORTS)}")
    limit_text = _one(params, "limit")
    limit = DEFAULT_LIMIT
    if limit_text is not None:
        if not LIMIT_TEXT.fullmatch(limit_text) or not 1 <= int(limit_text) <= MAX_LIMIT:
            raise BadSelector(f"limit: expected a whole number from 1 to {MAX_LIMIT}")
        limit = int(limit_text)
    where = BatchFilter(
        statuses=statuses,
        overdue=_flag(params, "overdue"),
        cancel_requested=_flag(params, "cancel_requested"),
        cancel_states=cancel_states,
        cancel_outcomes=outcomes,
        created_after=after,
        created_before=before,
        metadata=metadata,
        endpoint=_one(params, "endpoint"),
        model=_one(params, "model"),
    )
    typed = {
        name: [v for v in params.get(name, ()) if v.strip()]
        for name in (
            "status",
            "overdue",
            "cancel_requested",
            "cancel_state",
            "cancel_outcome",
            "created_after",
            "created_before",
            "newer_than",
            "older_than",
            "metadata",
            "endpoint",
            "model",
            "sort",
            "limit",
        )
    }
    return Selection(
        where=where,
        sort=sort,
        limit=limit,
        after=_one(params, "after"),
        typed={k: v for k, v in typed.items() if v},
    )

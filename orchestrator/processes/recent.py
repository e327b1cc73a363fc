"""How much of what it listed a long-running process keeps for its report at the stop.

A worker or a reconciler runs for months. Its lifetime report counts everything
exactly, but of the lists behind the counts (each cancel it sent, each batch whose
cancel closed, each unexpected error, ...) it keeps only the most recent
``RECENT_KEPT`` entries, and counts the older ones it let go, so that the report says
it is a sample. One pass or one drain (``--once``) keeps every entry: its work
bounds them, and scripts read them.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

RECENT_KEPT = 100
"""Entries each list or dict of a long-running process's lifetime report keeps."""


def keep_recent(items: list[Any] | dict[Any, Any], keep: int) -> int:
    """Drop the oldest entries of ``items`` (a list, or a dict in insertion order)
    beyond the ``keep`` most recent; return how many were dropped."""
    excess = len(items) - keep
    if excess <= 0:
        return 0
    if isinstance(items, list):
        del items[:excess]
    else:
        for key in list(islice(items, excess)):
            del items[key]
    return excess


def put_last(items: dict[Any, Any], key: Any, value: Any) -> None:
    """Set ``items[key]`` as its most recent entry (a plain assignment keeps the
    place a key already had, so an entry set again could be dropped as old)."""
    items.pop(key, None)
    items[key] = value

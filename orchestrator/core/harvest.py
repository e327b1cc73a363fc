"""Where the harvest of a batch's result files stands. Pure.

A batch's ``harvest_state``:

- ``waiting``: not terminal yet, nothing to fetch;
- ``pending``: terminal; files to download, or file ids still awaited;
- ``done``: every file stored (or the batch has no file at all);
- ``missing``: a file is gone (404): what it held cannot be had; needs a person;
- ``retrying``: a download kept failing; it will be tried again later.

A file's ``state`` in ``result_files``: ``pending`` (not fully stored yet),
``done`` or ``missing``.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

__all__ = ["NEEDS_ATTENTION", "FileState", "HarvestState", "after_files"]


class HarvestState(StrEnum):
    WAITING = "waiting"
    PENDING = "pending"
    DONE = "done"
    MISSING = "missing"
    RETRYING = "retrying"


class FileState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    MISSING = "missing"


NEEDS_ATTENTION: frozenset[HarvestState] = frozenset({HarvestState.MISSING, HarvestState.RETRYING})


def after_files(states: Iterable[FileState]) -> HarvestState:
    """The batch's harvest state once each known file was tried.

    A file still pending outranks a missing one: the pending one will be tried
    again, and only when it is done does the batch settle on ``missing``.
    """
    seen = set(states)
    if FileState.PENDING in seen:
        return HarvestState.RETRYING
    if FileState.MISSING in seen:
        return HarvestState.MISSING
    return HarvestState.DONE

"""Check ids before they go into a URL path. Pure.

The pattern is deliberately conservative and does not require the ``batch_`` /
``file-`` prefixes: Azure ids look different. Anything that could change the URL
(``/``, ``?``, ``%``, ``..``, whitespace) is refused.
"""

from __future__ import annotations

import re

from orchestrator.errors import InvalidBatchId

__all__ = ["BATCH_PREFIX", "ID_PATTERN", "validate_batch_id", "validate_file_id"]

# What every batch id the OpenAI API makes begins with (`cancel` and `track` take an id of
# another form, such as a gateway's, only when told: --any-id).
BATCH_PREFIX = "batch_"
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SHOWN = 40


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _validate(value: object, what: str) -> str:
    if not isinstance(value, str) or ID_PATTERN.fullmatch(value) is None:
        raise InvalidBatchId(
            f"{_shown(value)} is not a valid {what}: expected 1-128 characters "
            "from A-Z, a-z, 0-9, '_' and '-'"
        )
    return value


def validate_batch_id(value: object) -> str:
    """Return ``value`` if it can be a batch id, else raise ``InvalidBatchId``."""
    return _validate(value, "batch id")


def validate_file_id(value: object) -> str:
    """Return ``value`` if it can be a file id, else raise ``InvalidBatchId``.

    An empty string is refused here; callers treat ``""`` as "no file".
    """
    return _validate(value, "file id")

"""A string that never shows itself: the API key travels in one of these.

Every secret made in this process is also remembered, so that `scrub` can take
it out of any text we keep: the database's text columns call it on every value
written (`orchestrator.db.models`), whatever path the text took to get there (a
server's error message or status text reflecting the key, an exception's text).
"""

from __future__ import annotations

import threading

MIN_SCRUBBED = 4  # shorter values would mangle ordinary text, and are no keys
_known: tuple[str, ...] = ()
_lock = threading.Lock()


def scrub(text: str) -> str:
    """`text` with every secret this process knows replaced by ``***``."""
    for value in _known:
        if value in text:
            text = text.replace(value, "***")
    return text


def _remember(value: str) -> None:
    global _known
    if len(value) >= MIN_SCRUBBED and value not in _known:
        with _lock:
            _known = tuple(sorted({*_known, value}, key=len, reverse=True))


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        _remember(value)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    def __str__(self) -> str:
        return "***" if self._value else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> str:  # refuse to pickle the key into anything
        raise TypeError("Secret cannot be pickled")

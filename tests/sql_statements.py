"""The SQL a block of code sends through an engine, for tests that look at statements."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event


@contextmanager
def sent_through(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """(statement, parameters) of every statement run through ``engine`` in the block.
    Statements run straight on the driver (``Prepared``) do not pass its events."""
    seen: list[tuple[str, Any]] = []

    def capture(_c: object, _cur: object, statement: str, params: Any, *_: object) -> None:
        seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", capture)

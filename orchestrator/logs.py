"""Logging set-up for the processes: text or JSON lines, the key always scrubbed."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from orchestrator.secret import Secret

# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class RedactSecret(logging.Filter):
    """Replace the API key wherever it might appear in a record. Defence in depth."""

    def __init__(self, secret: Secret) -> None:
        super().__init__()
        self._value = secret.reveal()

    def filter(self, record: logging.LogRecord) -> bool:
        if self._value and len(self._value) >= 4:
            message = record.getMessage()
            if self._value in message:
                record.msg = message.replace(self._value, "***")
                record.args = None
            for key, value in list(vars(record).items()):
                if key in _STANDARD or self._value not in str(value):
                    continue
                if isinstance(value, str):
                    setattr(record, key, value.replace(self._value, "***"))
                else:  # a structured extra (a summary's report): scrub it as JSON
                    text = json.dumps(value, default=str).replace(self._value, "***")
                    setattr(record, key, json.loads(text))
        return True


# (name, value) pairs, innermost last; a tuple so the default can be shared safely
_context: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("orchestrator_log_ids", default=())


@contextmanager
def bind(**ids: str | None) -> Iterator[None]:
    """Put these ids (``batch_id``, ``request_id``, ``file_id``...) on every line logged
    inside the block on this thread, unless the line names its own."""
    token = _context.set(_context.get() + tuple((k, v) for k, v in ids.items() if v))
    try:
        yield
    finally:
        _context.reset(token)


class BoundIds(logging.Filter):
    """Adds the ids of the enclosing ``bind`` blocks to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in reversed(_context.get()):  # the innermost block wins
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: message [batch_id=... request_id=...]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = [
            f"{key}={getattr(record, key)}"
            for key in ("batch_id", "file_id", "request_id")
            if getattr(record, key, None)
        ]
        return f"{text} [{' '.join(context)}]" if context else text


def configure(level: str, fmt: str, secret: Secret, *more: Secret) -> None:
    """Log to stderr; ``secret`` and ``more`` (webhook secrets, each of a comma-separated
    list too) are scrubbed from every record."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(BoundIds())  # first, so the key is scrubbed from bound ids too
    handler.addFilter(RedactSecret(secret))
    for other in more:
        pieces = [other.reveal(), *(p.strip() for p in other.reveal().split(","))]
        for piece in sorted(set(pieces), key=len, reverse=True):  # the whole list first
            handler.addFilter(RedactSecret(Secret(piece)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "alembic", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

"""Logging set-up for the processes: text or JSON lines, the key and passwords always
scrubbed, and in text lines every control character of the message spelled out (log
lines quote the server: a newline in its text must not forge a line of ours)."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from orchestrator.core.visible import visible
from orchestrator.secret import Secret

# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class RedactSecret(logging.Filter):
    """Replace the API key and passwords wherever they might appear in a record.
    Defence in depth."""

    def __init__(self, *secrets: Secret, formatter: logging.Formatter | None = None) -> None:
        super().__init__()
        # The handler's formatter: the exception's text is written by it here, scrubbed,
        # and the formatter then uses that text (`exc_text`) instead of writing its own.
        self._formatter = formatter or logging.Formatter()
        # too short a value would scrub ordinary words; longest first, so a secret
        # that contains another is replaced whole
        values = {s.reveal() for s in secrets if len(s.reveal()) >= 4}
        self._values = sorted(values, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        # The message and the extras are read once for all the secrets: this runs for
        # every line (the worker logs one per answered cancel, the reconciler one per
        # change), and walking every attribute once per secret was a tenth of a line's cost.
        if not self._values:
            return True
        message = record.getMessage()
        extras = {key: str(value) for key, value in vars(record).items() if key not in _STANDARD}
        for secret in self._values:
            if secret in message:
                message = message.replace(secret, "***")
                record.msg, record.args = message, None
            for key, text in extras.items():
                if secret in text:
                    extras[key] = self._scrub(record, key, secret)
        # An exception's message (a driver's error quoting the URL, a server's echoing the
        # key) and a stack are outside text too.
        if record.exc_info:
            text = record.exc_text or self._formatter.formatException(record.exc_info)
            record.exc_text = self._scrub_text(text)
        if record.stack_info:
            record.stack_info = self._scrub_text(record.stack_info)
        return True

    def _scrub_text(self, text: str) -> str:
        for secret in self._values:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    @staticmethod
    def _scrub(record: logging.LogRecord, key: str, secret: str) -> str:
        """Replace ``secret`` in the extra ``key``; returns its text now."""
        value = getattr(record, key)
        if isinstance(value, str):
            value = value.replace(secret, "***")
        else:  # a structured extra (a summary's report): scrub it as JSON
            value = json.loads(json.dumps(value, default=str).replace(secret, "***"))
        setattr(record, key, value)
        return str(value)


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
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:  # written (and scrubbed) by RedactSecret, when it ran
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: message [batch_id=... request_id=...]`, one line per record
    (a traceback after it keeps its own lines), controls spelled out (`visible`)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        return visible(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        # A traceback has lines of its own ("Traceback", frames, "The above exception
        # ..."), kept; an exception's message is outside text, its newlines spelled out.
        pieces = []
        for piece in traceback.TracebackException(ei[0], ei[1], ei[2]).format():
            if piece.startswith(("\n", "Traceback", "  ")):
                pieces.append("\n".join(visible(line) for line in piece.split("\n")))
            else:
                pieces.append(visible(piece.removesuffix("\n")) + "\n")
        return "".join(pieces).removesuffix("\n")

    def formatStack(self, stack_info: str) -> str:
        return "\n".join(visible(line) for line in stack_info.splitlines())

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = [
            f"{key}={visible(str(getattr(record, key)))}"
            for key in ("batch_id", "file_id", "request_id")
            if getattr(record, key, None)
        ]
        return f"{text} [{' '.join(context)}]" if context else text


def configure(level: str, fmt: str, *secrets: Secret) -> None:
    # Neither format shows where a line was logged from, nor the thread or process:
    # skip finding them for every record (the logging HOWTO's "Optimization"; the
    # worker logs a line per answered cancel).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handler.setFormatter(formatter)
    handler.addFilter(BoundIds())  # first, so the key is scrubbed from bound ids too
    handler.addFilter(RedactSecret(*secrets, formatter=formatter))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "alembic", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

"""Every error the orchestrator raises on purpose.

    OrchestratorError
    ├── ConfigError            a setting has a bad value (names the setting)
    ├── InvalidBatchId         a batch id that cannot be one
    ├── DatabaseError
    │   ├── NotMigrated        schema missing, behind or newer; says what to run
    │   └── DatabaseUnavailable
    ├── UnknownBatch           an operator asked about a batch we do not track
    └── ApiError               anything from talking to the Batch API (see orchestrator.api.errors)

The message always says what was wrong; the original exception is kept as
``__cause__``. No message ever contains the API key.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Unexpected orchestrator error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(OrchestratorError):
    """A setting has a bad value."""


class InvalidBatchId(OrchestratorError):
    """Not a valid batch id."""


class DatabaseError(OrchestratorError):
    """The database could not do what was asked."""


class NotMigrated(DatabaseError):
    """The database schema is missing or behind (run `orchestrator db upgrade`), or a
    newer release migrated it (run that release)."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached now; the process loops back off and retry."""


class DatabaseBusy(DatabaseUnavailable):
    """The transaction lost to another (deadlock, serialization failure, a lock wait
    that ran out) and was rolled back: nothing was written, trying again is safe."""


class UnknownBatch(OrchestratorError):
    """No such batch in the state table."""


class ApiError(OrchestratorError):
    """The Batch API call failed."""


def describe(exc: BaseException) -> str:
    """An unexpected exception in one bounded line, for a stored error or an event."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:500]

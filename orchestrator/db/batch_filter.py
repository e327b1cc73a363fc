"""Which batches a command or the console means: one filter, one meaning, in SQL.

The command line's selector (`orchestrator/cli/selection.py`) and the console's
query string (`orchestrator/console/selectors.py`) both end here. The conditions are
SQL text (`db/sql_text.py`), so `status` can run them without SQLAlchemy; every
other reader wraps the same text (`db/queries.filter_clause`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from orchestrator.core.status import NO_CANCEL, UNOBSERVED
from orchestrator.db.sql_text import SQLITE, Params, bind_time, in_list

__all__ = ["NO_CANCEL", "BatchFilter", "Where"]

# Ordered by this, newest first, and filtered on it by the time flags: the server's
# created_at, or when we began tracking a batch it never showed us.
CREATED = "coalesce(batches.created_at, batches.tracked_at)"


@dataclass(frozen=True)
class Where:
    """A filter as SQL: conditions over `batches LEFT OUTER JOIN cancel_requests`, all
    of which must hold, and the values they name."""

    conditions: list[str]
    params: Params

    def clause(self) -> str:
        """` WHERE ...`, or nothing when there is no condition."""
        if not self.conditions:
            return ""
        return " WHERE " + " AND ".join(self.conditions)


@dataclass(frozen=True, kw_only=True)
class BatchFilter:
    """Which batches to show or select; every condition given must hold."""

    statuses: tuple[str, ...] = ()  # API statuses, or UNOBSERVED
    overdue: bool = False
    cancel_requested: bool = False
    # pending | accepted | closed | failed, or NO_CANCEL for batches never asked to cancel
    cancel_states: tuple[str, ...] = ()
    # cancelled, too_late:completed, ...; a value without ":" also matches "value:*"
    cancel_outcomes: tuple[str, ...] = ()
    # The server's created_at (when never observed: when we began tracking), by the
    # database server's clock: after is inclusive, before exclusive.
    created_after: datetime | None = None
    created_before: datetime | None = None
    metadata: tuple[tuple[str, str], ...] = ()  # key == value, all of them
    endpoint: str | None = None
    model: str | None = None
    endpoints: tuple[str, ...] = ()  # any of them
    models: tuple[str, ...] = ()  # any of them

    @property
    def is_empty(self) -> bool:
        return self == BatchFilter()

    def sql(self, dialect: str) -> Where:
        """The conditions in `dialect`'s SQL (parameters prefixed `f_`)."""
        params: Params = {}
        found = [*self._status_conditions(params), *self._cancel_conditions(params)]
        if self.overdue:
            found.append("batches.overdue_since IS NOT NULL")
        if self.created_after is not None:
            params["f_after"] = bind_time(dialect, self.created_after)
            found.append(f"{CREATED} >= :f_after")
        if self.created_before is not None:
            params["f_before"] = bind_time(dialect, self.created_before)
            found.append(f"{CREATED} < :f_before")
        for i, (key, value) in enumerate(self.metadata):
            params[f"f_key_{i}"], params[f"f_value_{i}"] = key, value
            if dialect == SQLITE:
                # By key, not by a JSON path: a path cannot name a key holding `"`
                # (nor, unescaped, `\`), and `a.b` in one is a nested key.
                found.append(
                    "CAST((SELECT meta.value FROM json_each(batches.metadata) AS meta "
                    f"WHERE meta.key = :f_key_{i}) AS VARCHAR) = :f_value_{i}"
                )
            else:
                found.append(f"CAST((batches.metadata ->> :f_key_{i}) AS VARCHAR) = :f_value_{i}")
        endpoints = (*self.endpoints, *([self.endpoint] if self.endpoint is not None else []))
        if endpoints:
            found.append(f"batches.endpoint IN ({in_list('f_endpoint', endpoints, params)})")
        models = (*self.models, *([self.model] if self.model is not None else []))
        if models:
            found.append(f"batches.model IN ({in_list('f_model', models, params)})")
        return Where(found, params)

    def _status_conditions(self, params: Params) -> list[str]:
        if not self.statuses:
            return []
        named = [s for s in self.statuses if s != UNOBSERVED]
        either = [f"batches.status IN ({in_list('f_status', named, params)})"] if named else []
        if UNOBSERVED in self.statuses:
            either.append("batches.status IS NULL")
        return [_any_of(either)]

    def _cancel_conditions(self, params: Params) -> list[str]:
        found: list[str] = []
        if self.cancel_requested:
            found.append("cancel_requests.batch_id IS NOT NULL")
        if self.cancel_states:
            states = [s for s in self.cancel_states if s != NO_CANCEL]
            any_of = (
                [f"cancel_requests.state IN ({in_list('f_state', states, params)})"]
                if states
                else []
            )
            if NO_CANCEL in self.cancel_states:
                any_of.append("cancel_requests.batch_id IS NULL")
            found.append(_any_of(any_of))
        if self.cancel_outcomes:
            any_of = [
                f"cancel_requests.outcome IN ({in_list('f_outcome', self.cancel_outcomes, params)})"
            ]
            prefixes = [o for o in self.cancel_outcomes if ":" not in o]
            for i, prefix in enumerate(prefixes):
                # `too_late` matches every `too_late:STATUS`. Not LIKE: SQLite's ignores case,
                # PostgreSQL's does not; substr compares exactly on both.
                params[f"f_prefix_{i}"] = f"{prefix}:"
                any_of.append(
                    f"substr(cancel_requests.outcome, 1, {len(prefix) + 1}) = :f_prefix_{i}"
                )
            found.append(_any_of(any_of))
        return found


def _any_of(conditions: list[str]) -> str:
    return conditions[0] if len(conditions) == 1 else "(" + " OR ".join(conditions) + ")"

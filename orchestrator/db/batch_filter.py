"""Which batches a command or the console means: one filter, one meaning, in SQL.

The command line's selector (`orchestrator/cli/selection.py`) and the console's
query string (`orchestrator/console/selectors.py`) both end here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_

from orchestrator.core.status import NO_CANCEL, UNOBSERVED
from orchestrator.db.models import Batch, CancelRequest

__all__ = ["NO_CANCEL", "BatchFilter"]


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

    def conditions(self) -> list[ColumnElement[bool]]:
        found = [*self._status_conditions(), *self._cancel_conditions()]
        if self.overdue:
            found.append(Batch.overdue_since.is_not(None))
        created = func.coalesce(Batch.created_at, Batch.tracked_at)
        if self.created_after is not None:
            found.append(created >= self.created_after)
        if self.created_before is not None:
            found.append(created < self.created_before)
        for key, value in self.metadata:
            # JSON_EXTRACT(metadata, '$."key"') on SQLite, metadata ->> 'key' on PostgreSQL
            found.append(Batch.metadata_[key].as_string() == value)
        endpoints = (*self.endpoints, *([self.endpoint] if self.endpoint is not None else []))
        if endpoints:
            found.append(Batch.endpoint.in_(endpoints))
        models = (*self.models, *([self.model] if self.model is not None else []))
        if models:
            found.append(Batch.model.in_(models))
        return found

    def _status_conditions(self) -> list[ColumnElement[bool]]:
        if not self.statuses:
            return []
        named = [s for s in self.statuses if s != UNOBSERVED]
        either = [Batch.status.in_(named)] if named else []
        if UNOBSERVED in self.statuses:
            either.append(Batch.status.is_(None))
        return [or_(*either)]

    def _cancel_conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.cancel_requested:
            found.append(CancelRequest.batch_id.is_not(None))
        if self.cancel_states:
            states = [s for s in self.cancel_states if s != NO_CANCEL]
            any_of = [CancelRequest.state.in_(states)] if states else []
            if NO_CANCEL in self.cancel_states:
                any_of.append(CancelRequest.batch_id.is_(None))
            found.append(or_(*any_of))
        if self.cancel_outcomes:
            prefixes = [o for o in self.cancel_outcomes if ":" not in o]
            found.append(
                or_(
                    CancelRequest.outcome.in_(self.cancel_outcomes),
                    *(CancelRequest.outcome.startswith(f"{o}:", autoescape=True) for o in prefixes),
                )
            )
        return found

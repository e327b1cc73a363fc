"""An event a rule asks its store to record. Pure."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PlannedEvent"]


@dataclass(frozen=True)
class PlannedEvent:
    """A ``batch_events`` row to record; the store adds the batch, the time and the source."""

    kind: str
    detail: str | None = None

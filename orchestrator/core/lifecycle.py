"""The legal moves between Batch statuses, as one shared `transitions` machine.

One machine definition serves every batch: the machine never holds a model. To
walk a batch along a path we hand each step's event a throwaway cursor object
carrying only the current status, so no per-row Machine is ever built (the
library's FAQ warns that per-object machines do not scale).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from transitions import Machine, MachineError

from orchestrator.core.status import BatchStatus

S = BatchStatus

# (trigger, sources, destination). The first block is documented by OpenAI; the
# second is what the reference marks possible or undocumented-but-seen, so we
# accept it rather than call the server a liar.
DOCUMENTED_EDGES: tuple[tuple[str, tuple[BatchStatus, ...], BatchStatus], ...] = (
    ("start", (S.VALIDATING,), S.IN_PROGRESS),
    ("fail", (S.VALIDATING,), S.FAILED),
    ("finalize", (S.IN_PROGRESS,), S.FINALIZING),
    ("expire", (S.IN_PROGRESS,), S.EXPIRED),
    ("complete", (S.FINALIZING,), S.COMPLETED),
    ("cancel", (S.IN_PROGRESS,), S.CANCELLING),
    ("confirm_cancel", (S.CANCELLING,), S.CANCELLED),
)
POSSIBLE_EDGES: tuple[tuple[str, tuple[BatchStatus, ...], BatchStatus], ...] = (
    ("cancel", (S.VALIDATING, S.FINALIZING), S.CANCELLING),
    ("complete", (S.CANCELLING,), S.COMPLETED),
    ("expire", (S.CANCELLING, S.FINALIZING), S.EXPIRED),
    ("fail", (S.CANCELLING, S.IN_PROGRESS), S.FAILED),
)


class _Cursor:
    """What a `transitions` event needs of a model: a `state` attribute."""

    __slots__ = ("state",)

    def __init__(self, state: BatchStatus) -> None:
        self.state: str = state.value


class IllegalMove(Exception):
    """No legal path leads from one status to the other."""


@dataclass(frozen=True)
class BatchLifecycle:
    machine: Machine

    @staticmethod
    def build() -> BatchLifecycle:
        transitions = [
            {"trigger": trigger, "source": [s.value for s in sources], "dest": dest.value}
            for trigger, sources, dest in DOCUMENTED_EDGES + POSSIBLE_EDGES
        ]
        machine = Machine(
            model=None,
            states=[s.value for s in BatchStatus],
            transitions=transitions,
            initial=None,
            auto_transitions=False,
        )
        return BatchLifecycle(machine)

    def edges(self) -> Iterator[tuple[BatchStatus, BatchStatus, str]]:
        """Every legal single step as (source, destination, trigger)."""
        for name, event in self.machine.events.items():
            for source, moves in event.transitions.items():
                for move in moves:
                    yield BatchStatus(source), BatchStatus(str(move.dest)), name

    def trigger_for(self, source: BatchStatus, dest: BatchStatus) -> str | None:
        return _trigger_table(self)[source].get(dest)

    def can_reach(self, source: BatchStatus, dest: BatchStatus) -> bool:
        return any(True for _ in self.paths(source, dest))

    def paths(self, source: BatchStatus, dest: BatchStatus) -> Iterator[tuple[BatchStatus, ...]]:
        """Every simple path from source to dest (the graph is tiny and acyclic)."""
        table = _trigger_table(self)

        def walk(
            at: BatchStatus, seen: tuple[BatchStatus, ...]
        ) -> Iterator[tuple[BatchStatus, ...]]:
            for nxt in table[at]:
                if nxt == dest:
                    yield (*seen, nxt)
                elif nxt not in seen:
                    yield from walk(nxt, (*seen, nxt))

        if source != dest:
            yield from walk(source, ())

    def best_path(
        self,
        source: BatchStatus,
        dest: BatchStatus,
        timestamps: Mapping[str, datetime | None],
    ) -> tuple[BatchStatus, ...]:
        """The path the batch most plausibly took, judged by the server's timestamps.

        validating -> completed could go through in_progress and finalizing or
        through cancelling; the timestamps the server set tell which (most
        intermediate timestamps seen, fewest missing). With no timestamps to go
        by, documented edges win, then the shorter path.
        """
        candidates = list(self.paths(source, dest))
        if not candidates:
            raise IllegalMove(f"no legal move from {source.value} to {dest.value}")

        evidence = any(
            timestamps.get(s.timestamp_field) is not None for path in candidates for s in path[:-1]
        )

        def score(path: tuple[BatchStatus, ...]) -> tuple[int, int, int, int]:
            middle = path[:-1]
            seen = sum(1 for s in middle if timestamps.get(s.timestamp_field) is not None)
            unseen = len(middle) - seen if evidence else 0
            undocumented = sum(
                1
                for a, b in zip((source, *path[:-1]), path, strict=True)
                if (a, b) not in _documented_pairs()
            )
            return (seen, -unseen, -undocumented, -len(path))

        return max(candidates, key=score)

    def walk(self, source: BatchStatus, path: tuple[BatchStatus, ...]) -> BatchStatus:
        """Fire each step's event through the machine; it refuses any illegal step."""
        cursor = _Cursor(source)
        for step in path:
            trigger = self.trigger_for(BatchStatus(cursor.state), step)
            if trigger is None:
                raise IllegalMove(f"no legal move from {cursor.state} to {step.value}")
            try:
                self.machine.events[trigger].trigger(cursor)
            except MachineError as exc:  # pragma: no cover - trigger_for already checked
                raise IllegalMove(str(exc)) from exc
            if cursor.state != step.value:
                raise IllegalMove(f"{trigger} led to {cursor.state}, not {step.value}")
        return BatchStatus(cursor.state)


@cache
def _trigger_table(lifecycle: BatchLifecycle) -> dict[BatchStatus, dict[BatchStatus, str]]:
    table: dict[BatchStatus, dict[BatchStatus, str]] = {s: {} for s in BatchStatus}
    for source, dest, trigger in lifecycle.edges():
        table[source][dest] = trigger
    return table


@cache
def _documented_pairs() -> frozenset[tuple[BatchStatus, BatchStatus]]:
    return frozenset((src, dest) for _, sources, dest in DOCUMENTED_EDGES for src in sources)


@cache
def lifecycle() -> BatchLifecycle:
    """The shared, immutable machine definition."""
    return BatchLifecycle.build()

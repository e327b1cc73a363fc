from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from orchestrator.core.lifecycle import IllegalMove, lifecycle
from orchestrator.core.status import TERMINAL, BatchStatus

S = BatchStatus

LEGAL = {
    (S.VALIDATING, S.IN_PROGRESS),
    (S.VALIDATING, S.FAILED),
    (S.VALIDATING, S.CANCELLING),
    (S.IN_PROGRESS, S.FINALIZING),
    (S.IN_PROGRESS, S.EXPIRED),
    (S.IN_PROGRESS, S.CANCELLING),
    (S.IN_PROGRESS, S.FAILED),
    (S.FINALIZING, S.COMPLETED),
    (S.FINALIZING, S.CANCELLING),
    (S.FINALIZING, S.EXPIRED),
    (S.CANCELLING, S.CANCELLED),
    (S.CANCELLING, S.COMPLETED),
    (S.CANCELLING, S.EXPIRED),
    (S.CANCELLING, S.FAILED),
}


def test_the_machine_has_exactly_the_legal_edges() -> None:
    assert {(a, b) for a, b, _ in lifecycle().edges()} == LEGAL


@pytest.mark.parametrize(("source", "dest"), sorted(LEGAL))
def test_every_legal_edge_walks(source: BatchStatus, dest: BatchStatus) -> None:
    assert lifecycle().walk(source, (dest,)) is dest


ILLEGAL = sorted(set(itertools.permutations(BatchStatus, 2)) - LEGAL)


@pytest.mark.parametrize(("source", "dest"), ILLEGAL)
def test_every_illegal_single_step_is_refused(source: BatchStatus, dest: BatchStatus) -> None:
    with pytest.raises(IllegalMove):
        lifecycle().walk(source, (dest,))


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_nothing_leaves_a_terminal_status(terminal: BatchStatus) -> None:
    for other in BatchStatus:
        assert not lifecycle().can_reach(terminal, other)


def test_no_status_reaches_back_to_validating() -> None:
    assert not any(lifecycle().can_reach(s, S.VALIDATING) for s in BatchStatus)


def test_auto_transitions_are_off() -> None:
    assert not any(name.startswith("to_") for name in lifecycle().machine.events)


T = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("source", "dest", "stamps", "expected"),
    [
        (S.VALIDATING, S.COMPLETED, {}, [S.IN_PROGRESS, S.FINALIZING, S.COMPLETED]),
        (S.VALIDATING, S.COMPLETED, {"cancelling_at": T}, [S.CANCELLING, S.COMPLETED]),
        (S.VALIDATING, S.CANCELLED, {"cancelling_at": T}, [S.CANCELLING, S.CANCELLED]),
        (
            S.VALIDATING,
            S.CANCELLED,
            {"in_progress_at": T, "cancelling_at": T},
            [S.IN_PROGRESS, S.CANCELLING, S.CANCELLED],
        ),
        (S.IN_PROGRESS, S.COMPLETED, {}, [S.FINALIZING, S.COMPLETED]),
        (S.IN_PROGRESS, S.COMPLETED, {"cancelling_at": T}, [S.CANCELLING, S.COMPLETED]),
        (S.IN_PROGRESS, S.EXPIRED, {}, [S.EXPIRED]),
        (S.VALIDATING, S.EXPIRED, {}, [S.IN_PROGRESS, S.EXPIRED]),
    ],
)
def test_jumps_take_the_path_the_timestamps_show(
    source: BatchStatus, dest: BatchStatus, stamps: dict[str, datetime], expected: list[BatchStatus]
) -> None:
    path = lifecycle().best_path(source, dest, stamps)
    assert list(path) == expected
    assert lifecycle().walk(source, path) is dest


def test_a_jump_with_no_legal_path_is_refused() -> None:
    with pytest.raises(IllegalMove):
        lifecycle().best_path(S.COMPLETED, S.IN_PROGRESS, {})


def test_the_definition_is_shared() -> None:
    assert lifecycle() is lifecycle()
    assert lifecycle().machine.models == []

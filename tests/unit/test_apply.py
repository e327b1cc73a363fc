from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.apply import Applied, StoredBatch, apply_observation
from orchestrator.core.lifecycle import lifecycle
from orchestrator.core.observation import BatchObservation
from orchestrator.core.status import TIMESTAMP_FIELDS, BatchStatus

S = BatchStatus
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def observe(status: str, **fields: Any) -> BatchObservation:
    stamps = {name: fields.pop(name, None) for name in TIMESTAMP_FIELDS}
    known = {s.value for s in BatchStatus}
    return BatchObservation(
        id="batch_1",
        status_text=status,
        status=BatchStatus(status) if status in known else None,
        timestamps=stamps,
        **fields,
    )


def fold(stored: StoredBatch, applied: Applied) -> StoredBatch:
    """What the store does with an Applied: write its changes."""
    ch = applied.changes
    counts = stored.request_counts
    if "request_counts_total" in ch:
        counts = (
            ch["request_counts_total"],
            ch["request_counts_completed"],
            ch["request_counts_failed"],
        )
    return StoredBatch(
        status=applied.status,
        timestamps={n: ch.get(n, stored.timestamps.get(n)) for n in TIMESTAMP_FIELDS},
        output_file_id=ch.get("output_file_id", stored.output_file_id),
        error_file_id=ch.get("error_file_id", stored.error_file_id),
        request_counts=counts,
        usage={**stored.usage, **{n: v for n, v in ch.items() if n.startswith("usage_")}},
    )


def test_first_sight_records_the_status_and_every_timestamp() -> None:
    applied = apply_observation(StoredBatch(), observe("in_progress", created_at=T0))
    assert applied.status is S.IN_PROGRESS
    assert applied.changes["status"] == "in_progress"
    assert applied.changes["created_at"] == T0
    assert [(c.from_status, c.to_status) for c in applied.status_changes] == [(None, S.IN_PROGRESS)]


def test_a_jump_walks_the_path_with_server_timestamps() -> None:
    stored = StoredBatch(status=S.VALIDATING, timestamps={"created_at": T0})
    later = T0 + timedelta(seconds=5)
    done = T0 + timedelta(seconds=9)
    applied = apply_observation(
        stored, observe("cancelled", cancelling_at=later, cancelled_at=done)
    )
    assert [(c.from_status, c.to_status, c.server_at) for c in applied.status_changes] == [
        (S.VALIDATING, S.CANCELLING, later),
        (S.CANCELLING, S.CANCELLED, done),
    ]
    assert applied.became_terminal


def test_a_regression_changes_nothing_and_is_an_anomaly() -> None:
    stored = StoredBatch(status=S.COMPLETED, request_counts=(10, 10, 0))
    applied = apply_observation(stored, observe("in_progress", request_counts=(10, 3, 0)))
    assert applied.status is S.COMPLETED
    assert applied.changes == {}
    assert applied.status_changes == ()
    assert applied.anomalies[0].kind == "illegal_move"
    assert "completed" in applied.anomalies[0].detail


def test_an_unknown_status_changes_nothing_and_is_an_anomaly() -> None:
    stored = StoredBatch(status=S.IN_PROGRESS)
    applied = apply_observation(stored, observe("paused", request_counts=(5, 5, 0)))
    assert applied.changes == {}
    assert applied.anomalies[0].kind == "unknown_status"
    assert "'paused'" in applied.anomalies[0].detail


def test_timestamps_are_set_once() -> None:
    stored = StoredBatch(status=S.CANCELLING, timestamps={"cancelling_at": T0})
    applied = apply_observation(
        stored, observe("cancelling", cancelling_at=T0 + timedelta(seconds=30))
    )
    assert "cancelling_at" not in applied.changes


def test_file_ids_are_set_once_and_counts_only_grow() -> None:
    stored = StoredBatch(status=S.COMPLETED, output_file_id="file-a", request_counts=(10, 8, 1))
    applied = apply_observation(
        stored,
        observe(
            "completed", output_file_id="file-b", error_file_id="file-e", request_counts=(10, 7, 2)
        ),
    )
    assert "output_file_id" not in applied.changes
    assert applied.changes["error_file_id"] == "file-e"
    (changed,) = applied.anomalies  # said, once a poll: the events keep one of each
    assert changed.kind == "file_id_changed"
    assert "file-b" in changed.detail and "kept file-a" in changed.detail
    assert applied.changes["request_counts_completed"] == 8
    assert applied.changes["request_counts_failed"] == 2


def test_token_usage_only_grows() -> None:
    """A stale answer (a list page read before the GET just recorded) keeps the higher
    figures; a field never seen before, or one that grew, is written."""
    stored = StoredBatch(
        status=S.COMPLETED,
        usage={"usage_input_tokens": 900, "usage_output_tokens": 400, "usage_total_tokens": None},
    )
    applied = apply_observation(
        stored,
        observe(
            "completed",
            usage={
                "usage_input_tokens": 500,
                "usage_output_tokens": 450,
                "usage_total_tokens": 950,
                "usage_cached_tokens": None,
            },
        ),
    )
    assert "usage_input_tokens" not in applied.changes
    assert applied.changes["usage_output_tokens"] == 450
    assert applied.changes["usage_total_tokens"] == 950
    assert "usage_cached_tokens" not in applied.changes


def test_the_same_observation_twice_is_a_no_op_for_status() -> None:
    obs = observe("cancelling", cancelling_at=T0)
    first = apply_observation(StoredBatch(status=S.IN_PROGRESS), obs)
    second = apply_observation(fold(StoredBatch(status=S.IN_PROGRESS), first), obs)
    assert second.status_changes == ()
    assert "status" not in second.changes


statuses = st.sampled_from([s.value for s in BatchStatus] + ["mystery"])
stamp = st.none() | st.integers(0, 10_000).map(lambda s: T0 + timedelta(seconds=s))
counts = st.none() | st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50))
file_id = st.none() | st.sampled_from(["file-a", "file-b"])


@st.composite
def observations(draw: st.DrawFn) -> BatchObservation:
    fields: dict[str, Any] = {name: draw(stamp) for name in TIMESTAMP_FIELDS}
    return observe(
        draw(statuses),
        request_counts=draw(counts),
        output_file_id=draw(file_id),
        error_file_id=draw(file_id),
        **fields,
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(observations(), min_size=1, max_size=12))
def test_no_sequence_of_observations_moves_backwards_or_breaks_a_rule(
    sequence: list[BatchObservation],
) -> None:
    stored = StoredBatch()
    for obs in sequence:
        applied = apply_observation(stored, obs)
        after = fold(stored, applied)
        # never backwards: the new status is the old one or reachable from it
        if stored.status is not None:
            assert after.status is not None
            assert after.status == stored.status or lifecycle().can_reach(
                stored.status, after.status
            )
        # every recorded step is a legal edge
        for change in applied.status_changes:
            if change.from_status is not None:
                lifecycle().walk(change.from_status, (change.to_status,))
        # set-once fields keep their first value
        for name in TIMESTAMP_FIELDS:
            if stored.timestamps.get(name) is not None:
                assert after.timestamps[name] == stored.timestamps[name]
        for name in ("output_file_id", "error_file_id"):
            if getattr(stored, name):
                assert getattr(after, name) == getattr(stored, name)
        if stored.request_counts and after.request_counts:
            assert all(
                a >= b for a, b in zip(after.request_counts, stored.request_counts, strict=True)
            )
        if obs.status is None:
            assert applied.anomalies
            assert applied.changes == {}
            assert after.status == stored.status
        stored = after

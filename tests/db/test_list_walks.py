"""The shared list walk's row: the turn is a lease, the cursor moves only for its holder,
and a page's batches are leased by the rule of db/leases.py."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from orchestrator.core.observation import BatchObservation
from orchestrator.core.poll_policy import PollPolicy
from orchestrator.core.status import BatchStatus
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database
from orchestrator.db.leases import ProcessRegistry
from orchestrator.db.list_polls import Due, ListPollStore
from orchestrator.db.list_walks import Busy, ListWalkStore, Next, Turn, WalkState
from orchestrator.db.models import Batch, BatchEvent
from orchestrator.db.polls import PollStore

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
HORIZON = timedelta(seconds=60)


def start_or_go_on(state: WalkState, due: Due) -> tuple[Next, str]:
    return (Next.START, "") if state.started_at is None else (Next.GO_ON, "")


def stores(database: Database) -> tuple[ListPollStore, ListWalkStore]:
    listed = ListPollStore(PollStore(database))
    return listed, ListWalkStore(listed)


def take(walks: ListWalkStore, owner: str, now: datetime) -> Turn | Busy | tuple[object, ...]:
    return walks.take_turn(owner, now=now, lease_seconds=30, horizon=HORIZON, decide=start_or_go_on)


def test_the_turn_is_one_processes_at_a_time_and_the_cursor_moves_on(database: Database) -> None:
    _, walks = stores(database)
    first = take(walks, "r1", T0)
    assert isinstance(first, Turn) and first.after_id is None and first.page == 0
    assert isinstance(take(walks, "r2", T0), Busy)  # r1 is fetching the first page
    assert walks.finish_turn("r1", first, after_id="batch_a", reached_at=T0)
    second = take(walks, "r2", T0)
    assert isinstance(second, Turn)
    assert (second.started_at, second.after_id, second.page) == (T0, "batch_a", 1)


def test_a_dead_holders_turn_is_taken_over_and_its_late_page_moves_nothing(
    database: Database,
) -> None:
    processes = ProcessRegistry(database)
    processes.register("r1", "reconciler", now=T0)
    _, walks = stores(database)
    first = take(walks, "r1", T0)
    assert isinstance(first, Turn)
    assert isinstance(take(walks, "r2", T0 + timedelta(seconds=19)), Busy)
    # no heartbeat for 20 s: r1 is dead, whatever its 30 s lease says
    again = take(walks, "r2", T0 + timedelta(seconds=21))
    assert isinstance(again, Turn) and again.after_id is None and again.page == 0
    assert not walks.finish_turn("r1", first, after_id="batch_late", reached_at=None)
    assert walks.finish_turn("r2", again, after_id="batch_a", reached_at=None)
    state = walks.state()
    assert state is not None and state.pages == 1


def test_the_end_of_the_list_ends_the_walk_and_a_new_one_begins_at_the_top(
    database: Database,
) -> None:
    _, walks = stores(database)
    turn = take(walks, "r1", T0)
    assert isinstance(turn, Turn)
    assert walks.finish_turn("r1", turn, after_id=None, reached_at=None, ended="the end")
    state = walks.state()
    assert state is not None and state.started_at is None and state.last_started_at == T0
    later = take(walks, "r2", T0 + timedelta(seconds=5))
    assert isinstance(later, Turn) and later.after_id is None
    assert later.started_at == T0 + timedelta(seconds=5)


def test_nothing_due_means_no_walk_and_no_turn(database: Database) -> None:
    _, walks = stores(database)

    def no_walk(state: WalkState, due: Due) -> tuple[Next, str]:
        assert due.tracked == 0
        return Next.NONE, "nothing due"

    got = walks.take_turn("r1", now=T0, lease_seconds=30, horizon=HORIZON, decide=no_walk)
    assert isinstance(got, tuple) and got[2] == "nothing due"
    assert isinstance(take(walks, "r2", T0), Turn)  # the turn was not taken


def observed(batch_id: str) -> BatchObservation:
    return BatchObservation(
        id=batch_id,
        status_text="in_progress",
        status=BatchStatus.IN_PROGRESS,
        timestamps={"created_at": T0 - timedelta(hours=1), "in_progress_at": T0},
    )


def test_a_page_takes_over_a_dead_processes_batch_and_skips_a_live_ones(
    database: Database,
) -> None:
    live, dead = "batch_" + "1" * 32, "batch_" + "2" * 32
    BatchStore(database).track([live, dead], now=T0, source="test")
    processes = ProcessRegistry(database)
    processes.register("alive", "reconciler", now=T0 + timedelta(seconds=30))
    processes.register("gone", "reconciler", now=T0)
    polls = PollStore(database)
    with database.transaction() as session:
        for owner, batch_id in (("alive", live), ("gone", dead)):
            polls.leases.claim(
                session,
                owner,
                now=T0,
                lease_seconds=300,
                due=Batch.id == batch_id,
                order_by=[Batch.id],
                limit=1,
            )
    listed, _ = stores(database)
    records = listed.record_page(
        [observed(live), observed(dead)],
        now=T0 + timedelta(seconds=30),
        owner="lister",
        policy=PollPolicy(),
        lease_seconds=60,
        u=lambda: 0.5,
    )
    assert [r.batch_id for r in records] == [dead]
    with database.transaction() as session:
        owners = dict(session.execute(select(Batch.id, Batch.lease_owner)).all())
        kinds = list(session.scalars(select(BatchEvent.kind).where(BatchEvent.batch_id == dead)))
    assert owners == {live: "alive", dead: None}  # observed, then its lease let go
    assert "lease_recovered" in kinds and "status" in kinds


def test_a_page_read_before_a_get_never_lowers_token_usage(database: Database) -> None:
    batch_id = "batch_" + "3" * 32
    BatchStore(database).track([batch_id], now=T0, source="test")
    listed, _ = stores(database)

    def page(tokens: int) -> None:
        seen = replace(observed(batch_id), usage={"usage_output_tokens": tokens})
        listed.record_page(
            [seen], now=T0, owner="lister", policy=PollPolicy(), lease_seconds=60, u=lambda: 0.5
        )

    page(300)
    page(100)
    with database.transaction() as session:
        tokens = session.scalar(select(Batch.usage_output_tokens).where(Batch.id == batch_id))
    assert tokens == 300


def test_a_walk_in_segments_is_a_turn_each_and_ends_with_its_last_segment(
    database: Database,
) -> None:
    ids = [f"batch_{n:032x}" for n in range(10)]
    BatchStore(database).track(ids, now=T0, source="test")
    _, walks = stores(database)

    def turn(owner: str) -> Turn | Busy | tuple[object, ...]:
        return walks.take_turn(
            owner,
            now=T0,
            lease_seconds=30,
            horizon=HORIZON,
            decide=start_or_go_on,
            segment_batches=5,
            cut_from=0,
        )

    top = turn("r1")  # ten due, a segment per five: one cut
    assert isinstance(top, Turn) and top.began and top.segment == "batches"
    assert top.after_id is None and top.segments == 2 and len(top.stops) == 1
    (cut,) = top.stops
    below = turn("r2")  # the other segment, at once: it begins after the cut
    assert isinstance(below, Turn) and not below.began and below.segment == "batches/01"
    assert below.after_id == cut and below.stops == frozenset() and below.page == 0
    assert isinstance(turn("r3"), Busy)  # both segments are being fetched
    assert walks.finish_turn("r2", below, after_id=None, reached_at=None, ended="the end")
    assert len(walks.segments()) == 2  # the first segment goes on: so does the walk
    state = walks.state()
    assert state is not None and state.started_at == T0
    assert walks.finish_turn("r1", top, after_id=None, reached_at=None, ended="the next cut")
    state = walks.state()
    assert state is not None and state.started_at is None  # its last segment ended it
    assert walks.segments() == []
    assert not walks.finish_turn("r2", below, after_id="batch_x", reached_at=None)  # not its turn


def test_cuts_fall_every_so_many_batches_due_the_most_urgent_segment_first(
    database: Database,
) -> None:
    ids = [f"batch_{n:032x}" for n in range(30)]
    BatchStore(database).track(ids, now=T0, source="test")
    with database.transaction() as session:
        for n, batch_id in enumerate(ids):  # created in id order; due oldest first
            session.execute(
                update(Batch)
                .where(Batch.id == batch_id)
                .values(
                    created_at=T0 - timedelta(hours=1) + timedelta(seconds=n),
                    next_poll_at=T0 + timedelta(seconds=n),
                )
            )
    listed, _ = stores(database)
    with database.transaction() as session:
        cuts = listed.cuts_in(session, T0, HORIZON, every=10, least=0, most=32)
        assert listed.cuts_in(session, T0, HORIZON, every=10, least=31, most=32) == []
        assert len(listed.cuts_in(session, T0, HORIZON, every=1, least=0, most=4)) == 4
    # newest first: 29..0; cuts after the 10th and the 20th, at batches 19 and 9; the
    # segment after 9 (8..0) holds the batches due first
    assert cuts == [ids[9], ids[19]]

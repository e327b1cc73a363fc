"""The shared list walk's row: the turn is a lease, the cursor moves only for its holder,
and a page's batches are leased by the rule of db/leases.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

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

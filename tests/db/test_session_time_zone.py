"""Every PostgreSQL session is in UTC, whatever the server, database or role says.

psycopg reads a ``timestamptz`` in the session's time zone: east of UTC, a Batch time
the parser accepts (the last second of 9999-12-31 UTC) is read as the year 10000 and
fails ("timestamp too large"), so every read of its row did, and the reconciler ended
at every restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from orchestrator.core.observation import LATEST_UNIX, parse_batch
from orchestrator.core.poll_policy import PollPolicy
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database
from orchestrator.db.engine import make_engine
from orchestrator.db.list_polls import Due, ListPollStore
from orchestrator.db.list_walks import ListWalkStore, Next, Turn, WalkState
from orchestrator.db.polls import PollStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
END_OF_CALENDAR = datetime.fromtimestamp(LATEST_UNIX, UTC)
EAST = "Europe/Berlin"


def _alter_database(url: str, setting: str) -> None:
    """``ALTER DATABASE`` the test's scratch database: every new session gets it."""
    name = make_url(url).database
    admin = make_url(url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET {setting}')


@pytest.fixture
def east_url(pg_url: str) -> str:
    """A database whose sessions begin east of UTC (its own setting, as a server's
    ``timezone`` or the host's PGTZ would make them)."""
    _alter_database(pg_url, f"timezone TO '{EAST}'")
    return pg_url


@pytest.fixture
def east(east_url: str) -> Iterator[Database]:
    db = Database.connect(east_url)
    yield db
    db.dispose()


@pytest.mark.postgres
def test_a_time_at_the_end_of_the_calendar_is_read_back_on_a_server_east_of_utc(
    east: Database,
) -> None:
    store = BatchStore(east)
    store.track(["batch_good", "batch_bad"], now=T0, source="track")
    hostile = {
        "id": "batch_bad",
        "status": "in_progress",
        "created_at": int(T0.timestamp()),
        "expires_at": LATEST_UNIX,
    }
    observed = parse_batch(hostile, expected_id="batch_bad")
    assert observed.anomalies == ()  # accepted: the last second a datetime holds
    polls = PollStore(east)
    polls.record_poll(observed, now=T0, owner="r1", policy=PollPolicy(), lease_seconds=60, u=0.0)
    claims = polls.claim_due(now=T0 + timedelta(days=1), owner="r2", lease_seconds=60, limit=10)
    assert {c.batch_id for c in claims} == {"batch_good", "batch_bad"}
    row = store.get("batch_bad")
    assert row is not None and row.expires_at == END_OF_CALENDAR


def _go_on(state: WalkState, due: Due) -> tuple[Next, str]:
    return (Next.START, "") if state.started_at is None else (Next.GO_ON, "")


@pytest.mark.postgres
def test_a_list_walk_that_reached_the_end_of_the_calendar_goes_on_east_of_utc(
    east: Database,
) -> None:
    """``reached_at`` is a listed batch's ``created_at``: the same read, of the walk's row."""
    walks = ListWalkStore(ListPollStore(PollStore(east)))
    turn = walks.take_turn("r1", now=T0, lease_seconds=30, horizon=timedelta(0), decide=_go_on)
    assert isinstance(turn, Turn)
    assert walks.finish_turn("r1", turn, after_id="batch_a", reached_at=END_OF_CALENDAR)
    later = T0 + timedelta(seconds=1)
    again = walks.take_turn("r2", now=later, lease_seconds=30, horizon=timedelta(0), decide=_go_on)
    assert isinstance(again, Turn) and again.after_id == "batch_a"
    state = walks.state()
    assert state is not None and state.reached_at == END_OF_CALENDAR


@pytest.mark.postgres
def test_the_utc_session_keeps_the_urls_own_options_and_the_read_only_one(
    east_url: str,
) -> None:
    """The session is set to UTC as it opens, whatever the URL's ``options`` ask; what
    else they set stays, and a reader's read-only transactions go beside it (passed as a
    connect argument, ours would otherwise replace the URL's)."""
    options = "-c search_path=elsewhere -c timezone=Asia/Tokyo"
    url = make_url(east_url).update_query_dict({"options": options})
    for read_only in (False, True):
        engine = make_engine(url.render_as_string(hide_password=False), read_only=read_only)
        try:
            with engine.connect() as connection:
                shown = [
                    connection.scalar(text(f"SHOW {name}"))
                    for name in ("timezone", "search_path", "default_transaction_read_only")
                ]
        finally:
            engine.dispose()
        assert shown == ["UTC", "elsewhere", "on" if read_only else "off"]


@pytest.mark.postgres
def test_pgoptions_still_applies_beside_the_utc_session(
    east_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq reads PGOPTIONS only when the connection gives no ``options``, and a
    reader's does: PGOPTIONS is passed on in them."""
    monkeypatch.setenv("PGOPTIONS", "-c search_path=elsewhere")
    for read_only in (False, True):
        engine = make_engine(east_url, read_only=read_only)
        try:
            with engine.connect() as connection:
                shown = [connection.scalar(text(f"SHOW {n}")) for n in ("timezone", "search_path")]
        finally:
            engine.dispose()
        assert shown == ["UTC", "elsewhere"]


@pytest.mark.postgres
def test_pgtz_on_the_host_does_not_move_the_session_off_utc(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq sends PGTZ after the ``-c`` options: a ``-c timezone=UTC`` lost to it."""
    monkeypatch.setenv("PGTZ", EAST)
    for read_only in (False, True):
        engine = make_engine(pg_url, read_only=read_only)
        try:
            with engine.connect() as connection:
                zone = connection.scalar(text("SHOW timezone"))
                year = connection.scalar(
                    text("SELECT extract(year FROM timestamptz '9999-12-31 23:59:59+00')::text")
                )
        finally:
            engine.dispose()
        assert (zone, year) == ("UTC", "9999")

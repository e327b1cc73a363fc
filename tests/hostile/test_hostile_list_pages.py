"""A list page (``GET /v1/batches``, the reconcilers' shared walk) that cannot be true.

One bad item never stops the pass, nor the process: the page's other batches are
recorded, and a page that cannot be used at all (its cursor, its length) ends the
walk, the batches then polled with single GETs. Over HTTP, from a real server on
loopback (``tests/hostile/server.py``).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from orchestrator.api.client import BatchApiClient
from orchestrator.clock import ManualClock
from orchestrator.core.observation import LATEST_UNIX
from orchestrator.db.batches import BatchStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch
from orchestrator.processes.reconciler import Reconciler, ReconcilerConfig
from tests.hostile.server import Answer, HostileServer, batch_object

GOOD = "batch_" + "1" * 32
ODD = "batch_" + "2" * 32


def listing(*items: dict[str, Any], has_more: bool = False) -> Answer:
    return Answer(body={"object": "list", "data": list(items), "has_more": has_more})


def statuses(database: Database) -> dict[str, str | None]:
    with database.transaction() as session:
        return dict(session.execute(select(Batch.id, Batch.status)).all())


def run_pass(database: Database, client: BatchApiClient, clock: ManualClock) -> None:
    config = ReconcilerConfig(concurrency=1, list_min_tracked=1, list_concurrency=1)
    with Reconciler(
        database, client, config, clock, "hostile-lister", random_unit=lambda: 0.5
    ) as reconciler:
        reconciler.run_once()


def in_progress(batch_id: str, clock: ManualClock, **fields: Any) -> dict[str, Any]:
    now = int(clock.now().timestamp())
    return batch_object(batch_id, "in_progress", created_at=now - 60, **fields)


@pytest.mark.parametrize(
    "odd",
    [
        pytest.param({"id": ["not", "text"], "status": "in_progress"}, id="id-is-a-list"),
        pytest.param({"id": {"an": "object"}, "status": "in_progress"}, id="id-is-an-object"),
    ],
)
def test_an_item_whose_id_is_not_text_leaves_the_rest_of_the_page_recorded(
    database: Database,
    hostile: HostileServer,
    client: BatchApiClient,
    clock: ManualClock,
    odd: dict[str, Any],
) -> None:
    BatchStore(database).track([GOOD], now=clock.now(), source="track")
    hostile.script("GET", "/v1/batches", listing(in_progress(GOOD, clock), odd))
    run_pass(database, client, clock)
    assert statuses(database) == {GOOD: "in_progress"}
    assert hostile.calls[("GET", f"/v1/batches/{GOOD}")] == 0  # the page observed it


def test_a_server_time_at_the_end_of_the_calendar_is_recorded_and_not_the_end_of_the_pass(
    database: Database, hostile: HostileServer, client: BatchApiClient, clock: ManualClock
) -> None:
    """The overdue limit added to a ``cancelling_at`` of 9999-12-31T23:59:59 overflowed."""
    BatchStore(database).track([GOOD, ODD], now=clock.now(), source="track")
    odd = batch_object(ODD, "cancelling", created_at=1, cancelling_at=LATEST_UNIX)
    hostile.script("GET", "/v1/batches", listing(in_progress(GOOD, clock), odd))
    run_pass(database, client, clock)
    assert statuses(database) == {GOOD: "in_progress", ODD: "cancelling"}


@pytest.mark.parametrize(
    "last",
    [
        pytest.param("batch_" + "x" * 200, id="cursor-longer-than-an-id"),
        pytest.param("batch_a/../b", id="cursor-not-of-an-ids-form"),
    ],
)
def test_a_page_whose_cursor_is_no_batch_id_ends_the_walk_and_single_gets_do_the_rest(
    database: Database,
    hostile: HostileServer,
    client: BatchApiClient,
    clock: ManualClock,
    last: str,
) -> None:
    """The cursor is kept in the database (``list_walks.after_id``, 128 characters) and
    sent back in the next page's query."""
    BatchStore(database).track([GOOD], now=clock.now(), source="track")
    page = listing(in_progress(GOOD, clock), in_progress(last, clock), has_more=True)
    hostile.script("GET", "/v1/batches", page)
    hostile.script("GET", f"/v1/batches/{GOOD}", Answer(body=in_progress(GOOD, clock)))
    run_pass(database, client, clock)
    assert statuses(database) == {GOOD: "in_progress"}
    assert hostile.calls[("GET", f"/v1/batches/{GOOD}")] == 1  # observed by a GET instead


def test_a_page_far_longer_than_asked_for_is_recorded(
    database: Database, hostile: HostileServer, client: BatchApiClient, clock: ManualClock
) -> None:
    """70,000 batches on a page (``limit=100`` asked): more ids than one statement takes."""
    BatchStore(database).track([GOOD], now=clock.now(), source="track")
    others = [{"id": f"batch_{n:06d}", "status": "in_progress"} for n in range(70_000)]
    hostile.script("GET", "/v1/batches", listing(in_progress(GOOD, clock), *others))
    run_pass(database, client, clock)
    assert statuses(database) == {GOOD: "in_progress"}
    assert hostile.calls[("GET", f"/v1/batches/{GOOD}")] == 0  # the page observed it

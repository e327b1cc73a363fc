"""A server that answers about another batch, or with numbers and ids that cannot be true.

Each test talks HTTP to a real server on loopback (`tests/hostile/server.py`).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from orchestrator.api.async_client import AsyncBatchApiClient
from orchestrator.api.client import BatchApiClient
from orchestrator.clock import ManualClock
from orchestrator.core.observation import parse_batch
from orchestrator.db.batches import BatchStore
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, CancelRequest
from tests.hostile.conftest import events, make_reconciler, make_worker
from tests.hostile.server import Answer, HostileServer, batch_object, error_answer

ASKED = "batch_asked"
OTHER = "batch_other"


def request(database: Database, clock: ManualClock, *ids: str) -> None:
    CancelStore(database).request(ids, now=clock.now(), requested_by="test")


def cancel_row(database: Database, batch_id: str) -> CancelRequest:
    with database.transaction() as session:
        row = session.get(CancelRequest, batch_id)
        assert row is not None
        return row


def batch_row(database: Database, batch_id: str) -> Batch:
    with database.transaction() as session:
        row = session.get(Batch, batch_id)
        assert row is not None
        return row


# --- wrong batch ---------------------------------------------------------------------------


@pytest.mark.parametrize("get_is", ["also-wrong", "right"])
def test_a_cancel_answered_with_another_batch_is_never_applied(
    database: Database,
    hostile: HostileServer,
    worker_client: AsyncBatchApiClient,
    clock: ManualClock,
    get_is: str,
) -> None:
    other = batch_object(OTHER, "cancelled", output_file_id="file-of-other")
    hostile.script("POST", f"/v1/batches/{ASKED}/cancel", Answer(body=other))
    truth = other if get_is == "also-wrong" else batch_object(ASKED, "cancelling")
    hostile.script("GET", f"/v1/batches/{ASKED}", Answer(body=truth))
    request(database, clock, ASKED)

    make_worker(database, worker_client, clock).run(threading.Event(), once=True)

    cancel, batch = cancel_row(database, ASKED), batch_row(database, ASKED)
    assert batch.output_file_id is None  # the other batch's file is never ours
    (anomaly, *more) = events(database, ASKED, "anomaly")
    assert OTHER in anomaly and "not applied" in anomaly
    if get_is == "also-wrong":
        assert len(more) == 1 and OTHER in more[0]
        assert batch.status is None and cancel.state == "pending"
        assert cancel.next_attempt_at is not None and cancel.next_attempt_at > clock.now()
        assert batch.next_poll_at is not None  # still polled
    else:  # the GET told the truth: the cancel took
        assert (batch.status, cancel.state) == ("cancelling", "accepted")


def test_the_get_after_a_refused_cancel_naming_another_batch_is_never_applied(
    database: Database,
    hostile: HostileServer,
    worker_client: AsyncBatchApiClient,
    clock: ManualClock,
) -> None:
    hostile.script("POST", f"/v1/batches/{ASKED}/cancel", error_answer(400, "cannot cancel"))
    other = batch_object(OTHER, "completed", output_file_id="file-of-other")
    hostile.script("GET", f"/v1/batches/{ASKED}", Answer(body=other))
    request(database, clock, ASKED)

    make_worker(database, worker_client, clock).run(threading.Event(), once=True)

    cancel, batch = cancel_row(database, ASKED), batch_row(database, ASKED)
    assert (batch.status, batch.output_file_id) == (None, None)
    assert cancel.state == "pending" and cancel.outcome is None  # not closed too_late
    assert cancel.next_attempt_at is not None and cancel.next_attempt_at > clock.now()
    assert any(OTHER in detail for detail in events(database, ASKED, "anomaly"))


def test_a_poll_answered_with_another_batch_is_an_anomaly_and_polled_again(
    database: Database, hostile: HostileServer, client: BatchApiClient, clock: ManualClock
) -> None:
    BatchStore(database).track([ASKED], now=clock.now(), source="track")
    other = batch_object(OTHER, "completed", output_file_id="file-of-other")
    hostile.script("GET", f"/v1/batches/{ASKED}", Answer(body=other))

    with make_reconciler(database, client, clock) as reconciler:
        summary = reconciler.run_once()
        clock.advance(3600)
        reconciler.run_once()  # the same wrong answer again

    assert summary.poll_failures == 1
    batch = batch_row(database, ASKED)
    assert (batch.status, batch.output_file_id, batch.poll_failures) == (None, None, 2)
    assert batch.next_poll_at is not None and batch.next_poll_at > clock.now()
    (anomaly,) = events(database, ASKED, "anomaly")  # recorded once, not at every poll
    assert OTHER in anomaly


# --- poison numbers, and other fields that cannot be true ------------------------------------

HUGE = 18446744073709551615


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("request_counts.total", HUGE),
        ("request_counts.total", -1),
        ("request_counts.total", 2.5),
        ("request_counts.total", "12"),
        ("request_counts.total", True),
        ("request_counts.total", 2**31),  # PostgreSQL INTEGER ends at 2**31 - 1
        ("usage.input_tokens", HUGE),
        ("usage.input_tokens", -7),
        ("created_at", 10**20),
        ("created_at", "yesterday"),
    ],
)
def test_a_poison_number_is_an_anomaly_on_its_field_and_the_rest_applies(
    database: Database,
    hostile: HostileServer,
    client: BatchApiClient,
    clock: ManualClock,
    where: str,
    value: object,
) -> None:
    BatchStore(database).track([ASKED], now=clock.now(), source="track")
    body = batch_object(ASKED, "in_progress", model="gpt-5", usage={"input_tokens": 5})
    parent, _, name = where.rpartition(".")
    (body[parent] if parent else body)[name] = value
    hostile.script("GET", f"/v1/batches/{ASKED}", Answer(body=body))

    with make_reconciler(database, client, clock) as reconciler:
        summary = reconciler.run_once()

    assert (summary.polled, summary.poll_failures) == (1, 0)
    batch = batch_row(database, ASKED)
    assert (batch.status, batch.model) == ("in_progress", "gpt-5")  # the rest applied
    stored = {
        "request_counts.total": batch.request_counts_total,
        "usage.input_tokens": batch.usage_input_tokens,
        "created_at": batch.created_at,
    }
    assert stored[where] is None  # refused: kept as it was (never seen)
    (anomaly,) = events(database, ASKED, "anomaly")
    assert where in anomaly and len(anomaly) < 300


def test_a_poison_number_in_a_cancel_answer_is_refused_and_the_cancel_accepted(
    database: Database,
    hostile: HostileServer,
    worker_client: AsyncBatchApiClient,
    clock: ManualClock,
) -> None:
    counts = {"total": HUGE, "completed": 0, "failed": 0}
    answer = batch_object(ASKED, "cancelling", request_counts=counts, usage={"total_tokens": -1})
    hostile.script("POST", f"/v1/batches/{ASKED}/cancel", Answer(body=answer))
    request(database, clock, ASKED)

    make_worker(database, worker_client, clock).run(threading.Event(), once=True)

    assert cancel_row(database, ASKED).state == "accepted"
    batch = batch_row(database, ASKED)
    assert (batch.status, batch.request_counts_total, batch.usage_total_tokens) == (
        "cancelling",
        None,
        None,
    )
    anomalies = " ".join(events(database, ASKED, "anomaly"))
    assert "request_counts.total" in anomalies and "usage.total_tokens" in anomalies


def test_a_file_id_that_is_no_file_id_is_refused_and_nothing_downloaded(
    database: Database, hostile: HostileServer, client: BatchApiClient, clock: ManualClock
) -> None:
    BatchStore(database).track([ASKED], now=clock.now(), source="track")
    body = batch_object(ASKED, "completed", output_file_id="../../v1/batches", completed_at=1)
    hostile.script("GET", f"/v1/batches/{ASKED}", Answer(body=body))

    with make_reconciler(database, client, clock) as reconciler:
        reconciler.run_once()

    batch = batch_row(database, ASKED)
    assert (batch.status, batch.output_file_id) == ("completed", None)
    assert any("output_file_id" in d for d in events(database, ASKED, "anomaly"))
    assert [path for _, path in hostile.calls] == [f"/v1/batches/{ASKED}"]


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ({"id": 12345, "status": "completed"}, "not a batch id"),
        ({"id": "batch_a/../b", "status": "completed"}, "not a batch id"),
        ({"id": "b" * 200, "status": "completed"}, "not a batch id"),
        ({"id": ASKED, "status": {"evil": True}}, "not a string"),
        ({"id": ASKED, "status": ["completed"]}, "not a string"),
    ],
)
def test_an_object_without_a_usable_id_or_status_is_malformed(
    payload: dict[str, Any], why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        parse_batch(payload)


def test_the_parsers_limits_are_the_columns() -> None:
    from orchestrator.core.observation import BIGINT_MAX, INT_MAX, TEXT_LIMITS

    columns = Batch.__table__.c
    for name, limit in TEXT_LIMITS.items():
        assert getattr(columns[name].type, "length", None) == limit, name
    for name in ("output_file_id", "error_file_id", "input_file_id", "id"):
        assert getattr(columns[name].type, "length", None) == 128, name
    assert BIGINT_MAX == 2**63 - 1 and str(columns["usage_input_tokens"].type) == "BIGINT"
    assert INT_MAX == 2**31 - 1 and str(columns["request_counts_total"].type) == "INTEGER"


def test_sync_skips_a_listed_object_without_a_batch_id_and_refuses_poison_fields(
    database: Database, clock: ManualClock
) -> None:
    from orchestrator.processes.sync import BatchSync, SyncReport

    listed = [
        batch_object("../../etc/passwd", "in_progress"),
        batch_object("batch_" + "x" * 200, "in_progress"),
        batch_object(
            ASKED, "in_progress", request_counts={"total": HUGE}, usage={"input_tokens": -1}
        ),
    ]
    report = SyncReport()
    BatchSync(database, harvest_finished=False).record_page(listed, clock.now(), report)

    assert (report.seen, report.new, len(report.malformed)) == (3, 1, 2)
    assert all("not a batch id" in problem for problem in report.malformed)
    with database.transaction() as session:
        assert [b.id for b in session.query(Batch)] == [ASKED]
    batch = batch_row(database, ASKED)
    assert (batch.status, batch.request_counts_total, batch.usage_input_tokens) == (
        "in_progress",
        None,
        None,
    )
    assert len(events(database, ASKED, "anomaly")) == 2


def test_sync_counts_a_batch_listed_twice_once_and_cuts_a_huge_malformed_id(
    database: Database, clock: ManualClock
) -> None:
    from orchestrator.processes.sync import BatchSync, SyncReport

    listed = [
        batch_object(ASKED, "in_progress"),
        batch_object(ASKED, "completed", output_file_id="file-out"),
        batch_object("x" * 1_000_000, "in_progress"),
    ]
    report = SyncReport()
    BatchSync(database, harvest_finished=True).record_page(listed, clock.now(), report)

    assert (report.seen, report.new, report.updated, report.unchanged) == (3, 1, 1, 0)
    assert len(report.malformed) == 1 and len(report.malformed[0]) < 300
    assert batch_row(database, ASKED).status == "completed"

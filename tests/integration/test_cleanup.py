"""File clean-up against a real simulator, on SQLite and PostgreSQL: a file is deleted
only once every line of its batch's files is stored and verified."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler

import pytest
from sqlalchemy import select, text, update

from orchestrator.api.answers import ApiResult
from orchestrator.api.errors import ApiCall, ApiHeldBack, RetryLater
from orchestrator.cli.main import main
from orchestrator.clock import ManualClock
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.db.database import Database
from orchestrator.db.file_deletions import FileDeletionStore
from orchestrator.db.models import Batch, FileDeletion, ResultFile
from orchestrator.db.polls import PollStore
from orchestrator.processes.cleanup import FileCleanup
from orchestrator.simulator import FaultRule
from tests.hostile.server import Answer, HostileServer

from .conftest import ReconcilerFactory, Sim, make_client, track


class Crash(BaseException):
    """The process dies here (nothing below it runs, nothing catches it)."""


CleanupFactory = Callable[..., FileCleanup]


@pytest.fixture
def make_cleanup(database: Database, sim: Sim, clock: ManualClock) -> Iterator[CleanupFactory]:
    made: list[FileCleanup] = []

    def make(*, input_files: bool, lease: float = 300.0) -> FileCleanup:
        store = FileDeletionStore(database, result_files=True, input_files=input_files)
        cleanup = FileCleanup(
            store,
            sim.client(clock),
            policy=RetryPolicy(),
            auth_pause_seconds=300.0,
            random_unit=lambda: 0.0,
            lease_seconds=lease,
        )
        made.append(cleanup)
        return cleanup

    yield make
    for cleanup in made:
        cleanup.client.close()


def deletions(database: Database) -> dict[str, FileDeletion]:
    with database.transaction() as session:
        return {d.file_id: d for d in session.scalars(select(FileDeletion))}


def batch_files(sim: Sim, batch_id: str) -> tuple[str, str, str]:
    view = sim.simulator.batch(batch_id)
    return view["output_file_id"], view["error_file_id"], view["input_file_id"]


def test_files_go_only_after_the_harvest_is_verified_and_each_deletion_is_recorded(
    database: Database,
    sim: Sim,
    clock: ManualClock,
    reconciler: ReconcilerFactory,
    make_cleanup: CleanupFactory,
) -> None:
    batch_id = sim.simulator.create_batch(300, age_s=100, cancel_after_s=30)
    track(database, clock, batch_id)
    cleanup = make_cleanup(input_files=False)
    assert cleanup.run_once().queued == 0  # not even polled yet
    output_id, error_id, input_id = batch_files(sim, batch_id)

    assert reconciler().run_once().harvested == 1
    report = cleanup.run_once()

    assert (report.queued, report.deleted, report.failed) == (2, 2, [])
    held = set(sim.simulator.file_ids())
    assert output_id not in held and error_id not in held and input_id in held
    rows = deletions(database)
    assert {f: (d.kind, d.state, d.outcome, d.attempts) for f, d in rows.items()} == {
        output_id: ("output", "done", "deleted", 1),
        error_id: ("error", "done", "deleted", 1),
    }
    assert all(d.last_http_status == 200 and d.done_at is not None for d in rows.values())
    assert cleanup.run_once().queued == 0  # each file once
    assert sim.simulator.served("delete_file") == 2


def test_an_output_file_two_batches_name_goes_only_once_both_are_harvested(
    database: Database,
    sim: Sim,
    clock: ManualClock,
    reconciler: ReconcilerFactory,
    make_cleanup: CleanupFactory,
) -> None:
    """A hostile or buggy server names one output file for two batches: the first
    harvest must not delete lines the second has not read yet."""
    first = sim.simulator.create_batch(300, age_s=100, cancel_after_s=30)
    track(database, clock, first)
    assert reconciler().run_once().harvested == 1
    shared, first_errors, _ = batch_files(sim, first)
    second = sim.simulator.create_batch(10, age_s=100)
    track(database, clock, second)
    with database.transaction() as session:  # what the server said of the second batch
        session.execute(
            update(Batch)
            .where(Batch.id == second)
            .values(
                status="completed",
                output_file_id=shared,
                error_file_id=None,
                harvest_state="pending",
            )
        )
    cleanup = make_cleanup(input_files=False)
    assert [d.file_id for d in cleanup.store.preview(limit=100)] == [first_errors]
    report = cleanup.run_once()
    assert (report.queued, report.deleted) == (1, 1)  # the first batch's own error file only
    assert shared in set(sim.simulator.file_ids())

    with database.transaction() as session:  # the second batch's harvest of it ends
        row = session.get(ResultFile, {"batch_id": first, "file_id": shared})
        assert row is not None
        session.add(
            ResultFile(
                batch_id=second,
                file_id=shared,
                kind="output",
                state="done",
                lines_committed=row.lines,
                lines=row.lines,
                sha256=row.sha256,
            )
        )
        session.execute(update(Batch).where(Batch.id == second).values(harvest_state="done"))
    assert cleanup.run_once().deleted == 1
    assert shared not in set(sim.simulator.file_ids())
    assert sim.simulator.served("delete_file") == 2


def test_a_crash_between_the_download_and_the_end_of_the_harvest_deletes_nothing(
    database: Database,
    sim: Sim,
    clock: ManualClock,
    reconciler: ReconcilerFactory,
    monkeypatch: pytest.MonkeyPatch,
    make_cleanup: CleanupFactory,
) -> None:
    """Every line is stored and the file rows say done, but the process dies before the
    batch's harvest is recorded as finished: the files are not ours yet."""
    batch_id = sim.simulator.create_batch(300, age_s=100)
    track(database, clock, batch_id)

    def die(*args: object, **kwargs: object) -> None:
        raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(PollStore, "finish_harvest", die)
        with pytest.raises(Crash):
            reconciler(owner="doomed").run_once()
    with database.transaction() as session:
        assert {f.state for f in session.scalars(select(ResultFile))} == {"done"}
        assert session.get(Batch, batch_id).harvest_state == "pending"  # type: ignore[union-attr]

    cleanup = make_cleanup(input_files=True)
    assert cleanup.run_once().queued == 0
    assert sim.simulator.served("delete_file") == 0

    clock.advance(400)  # the dead process's lease runs out; another reconciler finishes
    assert reconciler(owner="heir").run_once().harvested == 1
    assert cleanup.run_once().deleted == 3  # output, error and input


def test_an_interrupted_download_and_a_failed_harvest_delete_nothing(
    database: Database,
    sim: Sim,
    clock: ManualClock,
    reconciler: ReconcilerFactory,
    make_cleanup: CleanupFactory,
) -> None:
    cut = sim.simulator.create_batch(3000, age_s=100)
    gone = sim.simulator.create_batch(300, age_s=100)
    track(database, clock, cut, gone)
    cut_output = batch_files(sim, cut)[0]
    gone_output = batch_files(sim, gone)[0]
    sim.simulator.add_faults(
        [  # one download cut half-way, for good; one file the server no longer has
            FaultRule(kind="drop_mid", endpoint="content", file_id=cut_output, times=None),
            FaultRule(
                kind="status", status=404, endpoint="content", file_id=gone_output, times=None
            ),
        ]
    )
    summary = reconciler(download_attempts=1, read_bytes=16384).run_once()
    assert len(summary.files_failed) == 1 and len(summary.files_missing) == 1
    with database.transaction() as session:
        states = dict(session.execute(select(Batch.id, Batch.harvest_state)).all())
        partial = session.get(ResultFile, {"batch_id": cut, "file_id": cut_output})
    assert states == {cut: "retrying", gone: "missing"}
    assert partial is not None and partial.state == "pending" and partial.lines_committed > 0

    cleanup = make_cleanup(input_files=True)
    assert cleanup.store.preview(limit=100) == []
    report = cleanup.run_once()
    assert (report.queued, report.deleted) == (0, 0)
    assert sim.simulator.served("delete_file") == 0  # not even the complete error files


def test_a_file_already_gone_is_done_and_a_failed_call_is_retried_with_backoff(
    database: Database,
    sim: Sim,
    clock: ManualClock,
    reconciler: ReconcilerFactory,
    make_cleanup: CleanupFactory,
) -> None:
    batch_id = sim.simulator.create_batch(300, age_s=100, cancel_after_s=30)
    track(database, clock, batch_id)
    reconciler().run_once()
    output_id, error_id, _ = batch_files(sim, batch_id)
    sim.simulator.api_delete_file(output_id)  # someone else deleted it
    sim.simulator.add_fault(
        FaultRule(kind="status", status=503, endpoint="delete_file", file_id=error_id, times=None)
    )
    cleanup = make_cleanup(input_files=False)
    report = cleanup.run_once()
    assert (report.already_gone, report.retrying) == (1, 1)
    rows = deletions(database)
    assert (rows[output_id].state, rows[output_id].outcome) == ("done", "already_gone")
    waiting = rows[error_id]
    assert (waiting.state, waiting.last_http_status, waiting.attempts) == ("pending", 503, 1)
    assert waiting.next_attempt_at is not None and waiting.last_attempt_at is not None
    assert waiting.next_attempt_at > waiting.last_attempt_at  # backoff, on the database's clock
    assert cleanup.run_once().retrying == 0  # not due yet: nothing sent

    sim.simulator.clear_faults()
    with database.transaction() as session:  # the backoff has passed
        session.execute(
            update(FileDeletion).values(next_attempt_at=datetime(2000, 1, 1, tzinfo=UTC))
        )
    assert cleanup.run_once().deleted == 1
    assert deletions(database)[error_id].attempts == 2


def test_a_deletion_sent_by_a_process_that_died_before_recording_it_is_done_on_retry(
    database: Database,
    sim: Sim,
    clock: ManualClock,
    reconciler: ReconcilerFactory,
    monkeypatch: pytest.MonkeyPatch,
    make_cleanup: CleanupFactory,
) -> None:
    batch_id = sim.simulator.create_batch(300, age_s=100)
    track(database, clock, batch_id)
    reconciler().run_once()
    cleanup = make_cleanup(input_files=False, lease=0.0)

    def die(*args: object, **kwargs: object) -> None:
        raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(FileDeletionStore, "record", die)
        with pytest.raises(Crash):
            cleanup.run_once()
    assert sim.simulator.served("delete_file") == 1
    report = cleanup.run_once()  # the lease (0 s here) ran out: sent again, and 404 is done
    assert report.deleted + report.already_gone == 2
    assert {d.state for d in deletions(database).values()} == {"done"}


def test_cli_dry_run_lists_and_deletes_nothing(
    db_url: str,
    database: Database,
    sim: Sim,
    clock: ManualClock,
    reconciler: ReconcilerFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    batch_id = sim.simulator.create_batch(300, age_s=100)
    track(database, clock, batch_id)
    reconciler().run_once()
    output_id, error_id, input_id = batch_files(sim, batch_id)
    capsys.readouterr()
    code = main(["cleanup", "--dry-run", "--input-files", "--database-url", db_url])
    out, err = capsys.readouterr()
    assert code == 0
    listed = {line.split("\t")[0]: line.split("\t")[1] for line in out.splitlines()}
    assert listed == {output_id: "output", error_id: "error", input_id: "input"}
    assert "3 file(s) would be deleted" in err
    assert deletions(database) == {} and sim.simulator.served("delete_file") == 0


def test_files_kept_for_good_never_keep_a_newer_file_from_going(database: Database) -> None:
    """Two old batches share input file X with a batch whose harvest is missing: X stays,
    rightly, at every run. A newer batch's file Y may go; it is queued however many old
    candidates come before it (the candidates were one window of ``limit`` rows)."""
    at = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    harvested = {
        "batch_old1": ("file-X", "done"),
        "batch_old2": ("file-X", "done"),
        "batch_lost": ("file-X", "missing"),
        "batch_new": ("file-Y", "done"),
    }
    with database.transaction() as session:
        for n, (batch_id, (input_id, state)) in enumerate(harvested.items()):
            session.add(
                Batch(
                    id=batch_id,
                    tracked_at=at,
                    tracked_by="test",
                    updated_at=at,
                    status="completed",
                    input_file_id=input_id,
                    harvest_state=state,
                    harvested_at=at.replace(second=n),
                )
            )
    store = FileDeletionStore(database, result_files=False, input_files=True)
    assert store.enqueue(limit=2) == 1
    assert list(deletions(database)) == ["file-Y"]


@dataclass(frozen=True)
class Framed(Answer):
    """A file body framed as ``framing`` says: ``close`` (no Content-Length, no chunked:
    the body ends where the connection closes, as in HTTP/1.0) or ``chunked``."""

    framing: str = "close"


class FramingServer(HostileServer):
    """The hostile server, which always sends a Content-Length, able to frame a body
    otherwise."""

    def _send(self, handler: BaseHTTPRequestHandler, answer: Answer) -> None:
        if not isinstance(answer, Framed):
            super()._send(handler, answer)
            return
        data = answer.payload()  # gzipped if asked
        handler.send_response(answer.status)
        handler.send_header("content-type", "application/octet-stream")
        if answer.gzip:
            handler.send_header("content-encoding", "gzip")
        if answer.framing == "chunked":
            handler.send_header("transfer-encoding", "chunked")
            half = len(data) // 2
            data = (
                b"".join(
                    b"%x\r\n%s\r\n" % (len(part), part)
                    for part in (data[:half], data[half:])
                    if part
                )
                + b"0\r\n\r\n"
            )
        else:
            handler.send_header("connection", "close")
        handler.close_connection = True  # closing is the end of a close-delimited body
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()


@pytest.mark.parametrize(
    ("framing", "compressed", "cut", "deleted"),
    [
        pytest.param("close", False, True, False, id="close-delimited-cut-at-a-line-end"),
        pytest.param("close", False, False, False, id="close-delimited-whole"),
        pytest.param("close", True, False, False, id="close-delimited-gzip"),
        pytest.param("chunked", False, False, True, id="chunked"),
        pytest.param("length", False, False, True, id="content-length"),
    ],
)
def test_a_file_whose_download_could_not_vouch_for_its_end_is_not_deleted(
    database: Database,
    sim: Sim,
    clock: ManualClock,
    reconciler: ReconcilerFactory,
    make_cleanup: CleanupFactory,
    framing: str,
    compressed: bool,
    cut: bool,
    deleted: bool,
) -> None:
    """An output file sent with neither a Content-Length nor chunked framing ends where
    the connection closes: cut there at a line's end, it is stored ``done`` with the
    cut's line count and sha256, and nothing can tell (gzipped, nor can its members: a
    cut between two reads as a whole body of one). Such a file is kept on the server
    (and so, its harvest unverified, the batch's other files); a length or chunked
    framing vouch for the end."""
    batch_id = sim.simulator.create_batch(300, age_s=100, cancel_after_s=30)
    track(database, clock, batch_id)
    output_id, error_id, _ = batch_files(sim, batch_id)
    content = b"".join(sim.simulator.file_content(output_id).chunks())
    lines = content.count(b"\n")
    if cut:  # the connection closed cleanly after the first half of the lines
        content = b"".join(content.splitlines(keepends=True)[: lines // 2])
    served = (
        Answer(body=content, gzip=compressed)
        if framing == "length"
        else Framed(body=content, gzip=compressed, framing=framing)
    )
    with FramingServer(upstream=sim.server.url) as hostile:
        hostile.script("GET", f"/v1/files/{output_id}/content", served)
        client = make_client(hostile.url, clock)
        assert reconciler(client=client).run_once().harvested == 1
    with database.transaction() as session:
        row = session.get(ResultFile, {"batch_id": batch_id, "file_id": output_id})
        assert row is not None and row.state == "done"
        assert row.lines == row.lines_committed == (lines // 2 if cut else lines)
        assert row.end_checked is deleted
        assert session.get(Batch, batch_id).harvest_state == "done"  # type: ignore[union-attr]

    cleanup = make_cleanup(input_files=False)
    previewed = {d.file_id for d in cleanup.store.preview(limit=100)}  # cleanup --dry-run
    report = cleanup.run_once()
    held = set(sim.simulator.file_ids())
    if deleted:
        assert previewed == {output_id, error_id} and report.deleted == 2
        assert output_id not in held and error_id not in held
    else:
        assert previewed == set() and (report.queued, report.deleted) == (0, 0)
        assert output_id in held and error_id in held
        assert sim.simulator.served("delete_file") == 0


# --- the rule at the moment a DELETE goes out ------------------------------------------


def harvested(
    database: Database, batch_id: str, input_id: str, *, tracked_by: str = "test"
) -> None:
    """A batch that ended with its one output file stored in full and vouched for."""
    at = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    with database.transaction() as session:
        session.add(
            Batch(
                id=batch_id,
                tracked_at=at,
                tracked_by=tracked_by,
                updated_at=at,
                status="completed",
                input_file_id=input_id,
                output_file_id=f"file-out-{batch_id}",
                harvest_state="done",
                harvested_at=at,
            )
        )
        session.add(
            ResultFile(
                file_id=f"file-out-{batch_id}",
                batch_id=batch_id,
                kind="output",
                state="done",
                lines=1,
                lines_committed=1,
                sha256="ab" * 32,
                end_checked=True,
            )
        )


class RecordingClient:
    """``delete_file`` that records each file and runs ``meanwhile`` before the first."""

    def __init__(self, meanwhile: Callable[[], None] = lambda: None) -> None:
        self.deleted: list[str] = []
        self.meanwhile = meanwhile

    def delete_file(self, file_id: str) -> ApiResult:
        if not self.deleted:
            self.meanwhile()
        self.deleted.append(file_id)
        return ApiResult({"id": file_id, "object": "file", "deleted": True}, 200, "req_1", 1)

    def close(self) -> None:
        pass


def run_cleanup(database: Database, client: RecordingClient) -> None:
    store = FileDeletionStore(database, result_files=False, input_files=True)
    FileCleanup(store, client, policy=RetryPolicy(), auth_pause_seconds=300.0).run_once()  # type: ignore[arg-type]


def test_an_input_file_a_batch_began_to_use_after_the_queueing_is_not_deleted(
    database: Database,
) -> None:
    """Two input files queued; while the first DELETE is out, another host tracks a
    running batch that uses the second. The claims were a page, checked once, and the
    second DELETE went out regardless."""
    harvested(database, "batch_a1", "file-in-1")
    harvested(database, "batch_a2", "file-in-2")

    def another_host_tracks_a_running_batch() -> None:
        at = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
        with database.transaction() as session:
            session.add(
                Batch(
                    id="batch_b",
                    tracked_at=at,
                    tracked_by="test",
                    updated_at=at,
                    status="in_progress",
                    input_file_id="file-in-2",
                )
            )

    client = RecordingClient(another_host_tracks_a_running_batch)
    run_cleanup(database, client)
    assert client.deleted == ["file-in-1"]
    assert deletions(database)["file-in-2"].state == "pending"  # looked at again later


def test_no_input_file_goes_while_a_tracked_batch_s_input_is_unknown(database: Database) -> None:
    """batch_b was tracked a moment ago (say by `orchestrator cancel batch_b`) and runs on
    the server with file-in-1; until its first poll we do not know its input file."""
    harvested(database, "batch_a1", "file-in-1")
    at = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    with database.transaction() as session:
        session.add(Batch(id="batch_b", tracked_at=at, tracked_by="cancel", updated_at=at))
    store = FileDeletionStore(database, result_files=False, input_files=True)
    assert store.preview(limit=100) == []
    client = RecordingClient()
    run_cleanup(database, client)
    assert client.deleted == []
    with database.transaction() as session:  # once it is observed, and ended elsewhere
        session.execute(
            update(Batch)
            .where(Batch.id == "batch_b")
            .values(status="failed", input_file_id="file-in-9")
        )
    run_cleanup(database, client)
    assert client.deleted == ["file-in-1"]


def test_a_claim_commits_to_the_disk_before_its_delete(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a commit is in the WAL, not on the disk, until a checkpoint: a power cut
    after the DELETE could take back the harvest that allowed it."""
    harvested(database, "batch_a1", "file-in-1")
    durable: list[bool] = []
    real = Database.durable_transaction

    def watched(self: Database) -> Iterator[object]:
        with real(self) as session:
            if not database.is_postgres:
                level = session.execute(text("PRAGMA synchronous")).scalar()
                durable.append(level == 2)  # FULL
            else:
                durable.append(True)
            yield session

    monkeypatch.setattr(Database, "durable_transaction", contextmanager(watched))
    client = RecordingClient()
    run_cleanup(database, client)
    assert client.deleted == ["file-in-1"] and durable and all(durable)
    if not database.is_postgres:  # and the pooled connection is back to NORMAL
        with database.transaction() as session:
            assert session.execute(text("PRAGMA synchronous")).scalar() == 1


@pytest.mark.parametrize("found_by", ["sync", "webhook"])
def test_no_file_of_a_batch_found_rather_than_asked_for_is_deleted(
    database: Database, found_by: str
) -> None:
    """`sync` (and a webhook, with unknown batches adopted) follows every batch of the
    account, another system's too: its files, and a file it shares, stay."""
    harvested(database, "batch_found", "file-in-shared", tracked_by=found_by)
    harvested(database, "batch_ours", "file-in-shared")
    harvested(database, "batch_ours2", "file-in-ours")
    store = FileDeletionStore(database, result_files=True, input_files=True)
    assert {d.file_id for d in store.preview(limit=100)} == {
        "file-out-batch_ours",
        "file-out-batch_ours2",
        "file-in-ours",
    }


def test_the_sources_of_found_batches_are_the_ones_that_find_them() -> None:
    from orchestrator.core.cleanup import FOUND_BY
    from orchestrator.db.webhooks import SOURCE as WEBHOOK
    from orchestrator.processes.sync import SOURCE as SYNC

    assert set(FOUND_BY) == {SYNC, WEBHOOK}


class HeldBackClient(RecordingClient):
    """The shared request budget holds every DELETE back: nothing leaves the host."""

    def delete_file(self, file_id: str) -> ApiResult:
        call = ApiCall("delete_file", "DELETE", f"/files/{file_id}")
        raise RetryLater(30.0, ApiHeldBack(call, wait=30.0), attempts=1)


def test_a_deletion_the_budget_held_back_is_no_attempt(database: Database) -> None:
    """Counted as one, each hold lengthened the backoff of the first real failure."""
    harvested(database, "batch_held", "file-in-held")
    store = FileDeletionStore(database, result_files=True, input_files=False)
    client = HeldBackClient()
    FileCleanup(store, client, policy=RetryPolicy(), auth_pause_seconds=300.0).run_once()  # type: ignore[arg-type]
    row = deletions(database)["file-out-batch_held"]
    assert (row.state, row.attempts) == ("pending", 0)

"""Real worker and reconciler processes against a server that is hostile for some batches.

The hostile server forwards everything unscripted to a simulator, so the good
batches live a normal life there while the bad ones get every hostile kind of
answer. The good batches must converge as in a clean run (cancelled, every
result stored exactly once), each bad one must end with an anomaly a person can
read in `orchestrator show`, neither process may exit before SIGTERM, and the
peak RSS of each stays under 300 MB (docs/bad-input.md records the figure).

Among the bad: gzip bombs (a Batch object and a result file, each about 1 MB
that inflates to 1 GiB) and trickles (a Batch object a byte a second, a file
download slower than the minimum throughput); the processes run with a 2 s API
deadline and a 1 s throughput window so these end quickly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from orchestrator.clock import SystemClock
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import Base, Batch, BatchEvent, CancelRequest
from orchestrator.db.queries import OperatorQueries
from orchestrator.simulator import Scenario, Simulator, SimulatorConfig, SimulatorServer
from tests.hostile.server import Answer, HostileServer, batch_object, error_answer, gzip_bomb
from tests.integration.conftest import expected_outcomes, stored_outcomes

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(300)]

KEY = "sk-mixed-hostile-0123456789"
GOOD_BATCHES = 20
PEAK_RSS_LIMIT_MB = 300
HUGE = 18446744073709551615
LINES_BATCH = "batch_bad_lines"  # its bad lines are line errors, not anomalies
NOT_OBJECT = "batch_bad_not_object"  # the client refuses it: a failed poll, with the reason
LINE = b'{"custom_id": "%s", "response": {"status_code": %d, "body": {}}}\n'
# Bad batches a person reads in their failed polls, their files or their unreadable
# lines rather than in an anomaly, with the words that must be there.
SLOW = {
    "batch_bad_bomb_object": "api_max_answer_bytes",
    "batch_bad_trickle_object": "api_deadline",
    "batch_bad_bomb_file": "unreadable line",
    "batch_bad_slow_file": "download_min_bytes_per_second",
}


def wait_for(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    """Wait for the processes to reach a state: check, then block briefly, until a deadline."""
    pause = threading.Event()
    deadline = SystemClock().now().timestamp() + timeout
    while not condition():
        if SystemClock().now().timestamp() > deadline:
            raise AssertionError(f"timed out: {what()}")
        pause.wait(0.2)


def script_bad_batches(hostile: HostileServer, good: list[str]) -> dict[str, str]:
    """Script one bad batch per hostile kind; returns batch id -> kind."""
    victim = good[0]  # the wrong answers name a good batch: it must not be touched
    wrong = batch_object(victim, "cancelled", output_file_id="file-of-the-victim")
    poison = {"total": HUGE, "completed": -1, "failed": "2"}
    bad = {
        "batch_bad_wrong_cancel": "wrong batch in the cancel's 200 and in the GET",
        "batch_bad_wrong_get": "400 on cancel, another batch in the GET",
        "batch_bad_poison": "poison numbers",
        "batch_bad_key": "the key reflected in status text and errors",
        "batch_bad_shared_a": "an output file shared with another batch",
        "batch_bad_shared_b": "an output file shared with another batch",
        "batch_bad_file_id": "a file id that is no file id",
        "batch_bad_not_object": "a JSON array instead of a Batch",
        "batch_bad_lines": "result lines with absurd numbers",
        "batch_bad_bomb_object": "a Batch object that inflates to 1 GiB",
        "batch_bad_trickle_object": "a Batch object sent a byte a second",
        "batch_bad_bomb_file": "a result file that inflates to 1 GiB",
        "batch_bad_slow_file": "a download slower than the minimum throughput",
    }
    for batch_id in bad:
        cancel, get = f"/v1/batches/{batch_id}/cancel", f"/v1/batches/{batch_id}"
        hostile.script("POST", cancel, Answer(body=batch_object(batch_id, "cancelling")))
        ended = batch_object(batch_id, "cancelled", cancelled_at=1_767_225_700)
        hostile.script("GET", get, Answer(body=ended))
    hostile.script("POST", "/v1/batches/batch_bad_wrong_cancel/cancel", Answer(body=wrong))
    hostile.script("GET", "/v1/batches/batch_bad_wrong_cancel", Answer(body=wrong))
    hostile.script("POST", "/v1/batches/batch_bad_wrong_get/cancel", error_answer(400, "no"))
    hostile.script("GET", "/v1/batches/batch_bad_wrong_get", Answer(body=wrong))
    poisoned = batch_object(
        "batch_bad_poison",
        "cancelled",
        request_counts=poison,
        usage={"input_tokens": HUGE, "output_tokens": 1.5, "total_tokens": True},
        created_at=10**20,
    )
    hostile.script("POST", "/v1/batches/batch_bad_poison/cancel", Answer(body=poisoned))
    hostile.script("GET", "/v1/batches/batch_bad_poison", Answer(body=poisoned))
    hostile.script("POST", "/v1/batches/batch_bad_key/cancel", error_answer(500, f"key {KEY}"))
    reflected = batch_object("batch_bad_key", KEY, metadata={"k": KEY})
    hostile.script("GET", "/v1/batches/batch_bad_key", Answer(body=reflected))
    for batch_id in ("batch_bad_shared_a", "batch_bad_shared_b"):
        shared = batch_object(batch_id, "cancelled", output_file_id="file-bad-shared")
        hostile.script("GET", f"/v1/batches/{batch_id}", Answer(body=shared))
    lines = LINE % (b"s1", 200) + LINE % (b"s2", 200)
    hostile.script("GET", "/v1/files/file-bad-shared/content", Answer(body=lines))
    no_file = batch_object("batch_bad_file_id", "cancelled", output_file_id="../../v1/batches")
    hostile.script("GET", "/v1/batches/batch_bad_file_id", Answer(body=no_file))
    hostile.script("GET", "/v1/batches/batch_bad_not_object", Answer(body=[wrong]))
    absurd = batch_object("batch_bad_lines", "cancelled", output_file_id="file-bad-lines")
    hostile.script("GET", "/v1/batches/batch_bad_lines", Answer(body=absurd))
    odd = LINE % (b"x1", 2**64 - 1) + LINE % (b"x2", -5) + b'{"custom_id": 1e999}\n'
    hostile.script("GET", "/v1/files/file-bad-lines/content", Answer(body=odd))
    script_bombs_and_trickles(hostile)
    return bad


def script_bombs_and_trickles(hostile: HostileServer) -> None:
    gzipped = {"content-encoding": "gzip"}
    ended = batch_object("batch_bad_bomb_object", "cancelled")
    head, tail = json.dumps(ended).encode()[:-1], b"}"
    bomb = gzip_bomb(head + b', "pad": "', 1024, b'"' + tail, fill=b"a")
    hostile.script("GET", "/v1/batches/batch_bad_bomb_object", Answer(body=bomb, headers=gzipped))
    trickled = Answer(
        body=batch_object("batch_bad_trickle_object", "cancelled"), trickle_bytes=1, trickle_s=1.0
    )
    hostile.script("GET", "/v1/batches/batch_bad_trickle_object", trickled)
    for batch_id, file_id in (
        ("batch_bad_bomb_file", "file-bad-bomb"),
        ("batch_bad_slow_file", "file-bad-slow"),
    ):
        named = batch_object(batch_id, "cancelled", output_file_id=file_id)
        hostile.script("GET", f"/v1/batches/{batch_id}", Answer(body=named))
    file_bomb = gzip_bomb(LINE % (b"b1", 200), 1024, fill=b"x")  # then one line of 1 GiB
    hostile.script(
        "GET", "/v1/files/file-bad-bomb/content", Answer(body=file_bomb, headers=gzipped)
    )
    lines = b"".join(LINE % (b"slow%d" % n, 200) for n in range(200))
    slow = Answer(body=lines, trickle_bytes=100, trickle_s=0.5)  # 200 B/s, 10 kB/s required
    hostile.script("GET", "/v1/files/file-bad-slow/content", slow)


def readable(db: Database, batch_id: str, words: str) -> bool:
    """Does `show` say what went wrong with this batch, in these words?"""
    detail = OperatorQueries(db).detail(batch_id)
    if detail is None:
        return False
    if words == "unreadable line":
        return detail.unreadable_lines > 0 and detail.batch["harvest_state"] == "done"
    said = [str(e.get("detail") or "") for e in detail.events]
    said += [str(f.get("last_error") or "") for f in detail.files]
    return any(words in text for text in said)


@pytest.fixture
def servers() -> Iterator[tuple[Simulator, HostileServer]]:
    simulator = Simulator(SimulatorConfig(api_key=KEY, seed=23), SystemClock())
    with SimulatorServer(simulator) as upstream, HostileServer(upstream.url) as hostile:
        yield simulator, hostile


def environment(pg_url: str, hostile: HostileServer) -> dict[str, str]:
    return {
        **os.environ,
        "ORCHESTRATOR_DATABASE_URL": pg_url,
        "OPENAI_BASE_URL": hostile.url,
        "OPENAI_API_KEY": KEY,
        "ORCHESTRATOR_WORKER_CONCURRENCY": "4",
        "ORCHESTRATOR_WORKER_IDLE_SECONDS": "0.1",
        "ORCHESTRATOR_RECONCILE_IDLE_SECONDS": "0.1",
        "ORCHESTRATOR_RETRY_IN_PROCESS_ATTEMPTS": "1",
        "ORCHESTRATOR_RETRY_DURABLE_INITIAL": "0.5",
        "ORCHESTRATOR_RETRY_DURABLE_MAX": "2",
        "ORCHESTRATOR_POLL_INITIAL_SECONDS": "0.2",
        "ORCHESTRATOR_POLL_MAX_SECONDS": "1",
        "ORCHESTRATOR_POLL_CANCELLING_MAX_SECONDS": "0.5",
        "ORCHESTRATOR_POLL_ERROR_MAX_SECONDS": "1",
        "ORCHESTRATOR_FILE_ID_REPOLLS": "1",
        "ORCHESTRATOR_LOG_LEVEL": "WARNING",
        "ORCHESTRATOR_API_DEADLINE": "2",
        "ORCHESTRATOR_DOWNLOAD_MIN_BYTES_PER_SECOND": "10000",
        "ORCHESTRATOR_DOWNLOAD_THROUGHPUT_WINDOW": "1",
    }


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process has had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


def where(db: Database, ids: list[str]) -> str:
    """Each batch's state, for the message of a timeout."""
    with db.transaction() as session:
        rows = session.execute(
            select(
                Batch.id,
                Batch.status,
                Batch.harvest_state,
                Batch.result_line_errors,
                CancelRequest.state,
                select(func.count())
                .where(BatchEvent.batch_id == Batch.id, BatchEvent.kind == "anomaly")
                .scalar_subquery(),
                select(func.max(BatchEvent.detail))
                .where(BatchEvent.batch_id == Batch.id, BatchEvent.kind == "anomaly")
                .scalar_subquery(),
            )
            .join(CancelRequest, CancelRequest.batch_id == Batch.id)
            .where(Batch.id.in_(ids))
        ).all()
    return "not converged: " + "; ".join(" ".join(map(str, row)) for row in rows)


def converged(db: Database, good: list[str], bad: dict[str, str]) -> bool:
    with db.transaction() as session:
        done = session.scalar(
            select(func.count())
            .select_from(Batch)
            .join(CancelRequest, CancelRequest.batch_id == Batch.id)
            .where(
                Batch.id.in_(good),
                Batch.harvest_state == "done",
                CancelRequest.state == "closed",
            )
        )
        flagged = set(
            session.scalars(
                select(BatchEvent.batch_id).where(
                    BatchEvent.kind == "anomaly", BatchEvent.batch_id.in_(list(bad))
                )
            )
        )
        lines = session.execute(
            select(Batch.harvest_state, Batch.result_line_errors).where(Batch.id == LINES_BATCH)
        ).one()
    expected = set(bad) - {LINES_BATCH, NOT_OBJECT, *SLOW}  # each shows it in its own way
    slow = all(readable(db, batch_id, words) for batch_id, words in SLOW.items())
    return done == len(good) and flagged >= expected and tuple(lines) == ("done", 1) and slow


def test_good_batches_converge_and_bad_ones_are_anomalies_under_real_processes(
    pg_url: str, servers: tuple[Simulator, HostileServer], tmp_path: Path
) -> None:
    simulator, hostile = servers
    good = [
        simulator.create_batch(5, Scenario(cancelling_s=1.0), age_s=10) for _ in range(GOOD_BATCHES)
    ]
    bad = script_bad_batches(hostile, good)
    # two good batches first hear a wrong answer, then the truth
    stray = Answer(body=batch_object("batch_bad_poison", "cancelled"))
    hostile.script("POST", f"/v1/batches/{good[1]}/cancel", stray, then_upstream=True)
    hostile.script("GET", f"/v1/batches/{good[2]}", stray, then_upstream=True)
    db = Database.connect(pg_url)
    CancelStore(db).request([*good, *bad], now=SystemClock().now(), requested_by="test")
    env = environment(pg_url, hostile)

    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "reconcile")}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    for name, log in logs.items():
        with log.open("wb") as stderr:
            command = [sys.executable, "-m", "orchestrator", name]
            processes[name] = subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=stderr
            )
    try:
        wait_for(lambda: converged(db, good, bad), 150, lambda: where(db, [*good, *bad]))
        alive = {name: p.poll() is None for name, p in processes.items()}
        peaks = {name: peak_rss_mb(p.pid) for name, p in processes.items()}
    finally:
        for proc in processes.values():
            proc.send_signal(signal.SIGTERM)
        codes = {name: proc.wait(60) for name, proc in processes.items()}
    tails = {name: log.read_text()[-3000:] for name, log in logs.items()}
    assert alive == {"worker": True, "reconcile": True}, tails  # nobody left before SIGTERM
    assert codes == {"worker": 0, "reconcile": 0}, tails
    print(f"peak RSS (MB): {json.dumps({k: round(v, 1) for k, v in peaks.items()})}")
    assert max(peaks.values()) < PEAK_RSS_LIMIT_MB, peaks

    for batch_id in good:  # exactly as in a clean run
        assert stored_outcomes(db, batch_id) == expected_outcomes(simulator, batch_id)
    with db.transaction() as session:
        outcomes = dict(
            session.execute(
                select(CancelRequest.batch_id, CancelRequest.outcome).where(
                    CancelRequest.batch_id.in_(good)
                )
            ).all()
        )
        victim = session.get(Batch, good[0])
        assert victim is not None and victim.output_file_id != "file-of-the-victim"
        wrong = session.get(CancelRequest, "batch_bad_wrong_cancel")
        assert wrong is not None and wrong.state == "pending"  # never accepted by a wrong answer
        stored = "\n".join(
            repr(tuple(row))
            for table in Base.metadata.sorted_tables
            for row in session.execute(select(table))
        )
    assert set(outcomes.values()) == {"cancelled"}
    assert KEY not in stored

    # A person can read each one in `show` (the CLI once: it starts slowly on a busy
    # machine; for the others the query it prints).
    assert any(e["kind"] == "anomaly" for e in show(env, "batch_bad_wrong_cancel")["events"])
    for batch_id, kind in bad.items():
        detail = OperatorQueries(db).detail(batch_id)
        assert detail is not None
        if batch_id == LINES_BATCH:
            assert detail.unreadable_lines == 1, detail.batch
            continue
        if batch_id in SLOW:
            assert readable(db, batch_id, SLOW[batch_id]), (kind, detail)
            continue
        shown = {"events": detail.events}
        kinds = ("anomaly", "poll_failed") if batch_id == NOT_OBJECT else ("anomaly",)
        anomalies = [e for e in shown["events"] if e["kind"] in kinds]
        assert anomalies and all(KEY not in str(e["detail"] or "") for e in anomalies), kind
    db.dispose()


def show(env: dict[str, str], batch_id: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "show", batch_id, "--json"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown

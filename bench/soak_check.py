"""The soak's invariants, checked against the simulator's own ground truth.

Both sides are read in full once the processes are stopped: the simulator's view
of every batch (``GET /_sim/batches/{id}``, which uses up no lagging poll), its
truth (``/truth``: where each custom_id ended up) and its counters; our tables.
Each check adds what it finds to ``Problems`` under the invariant's name.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import func, select

from orchestrator.core.lifecycle import lifecycle
from orchestrator.core.request_budget import BudgetRule
from orchestrator.core.status import TIMESTAMP_FIELDS, BatchStatus, parse_status
from orchestrator.db.database import Database
from orchestrator.db.models import (
    Batch,
    BatchEvent,
    BatchResult,
    CancelAttempt,
    CancelRequest,
    ResultFile,
    ResultLineError,
)

HOT_LOOP_BOUND = 20  # cancels the server saw for one batch; a hot loop sends hundreds
_EXAMPLES = 3


class Problems:
    """Broken invariants: a count and a few examples each."""

    def __init__(self) -> None:
        self.found: dict[str, list[str]] = defaultdict(list)

    def add(self, invariant: str, message: str) -> None:
        self.found[invariant].append(message)

    def __bool__(self) -> bool:
        return bool(self.found)

    def summary(self) -> str:
        parts = []
        for name, messages in self.found.items():
            shown = "; ".join(messages[:_EXAMPLES])
            more = f" (+{len(messages) - _EXAMPLES} more)" if len(messages) > _EXAMPLES else ""
            parts.append(f"{name}: {len(messages)} x [{shown}{more}]")
        return " | ".join(parts)


# --- reading both sides -----------------------------------------------------------------


@dataclass
class ServerSide:
    views: dict[str, dict[str, Any]]  # batch id -> the API view
    truth: dict[str, dict[str, str]]  # batch id -> custom_id -> outcome


def read_server(control: httpx.Client, ids: list[str], threads: int = 4) -> ServerSide:
    """Every batch's view and truth, a few requests at a time (the server is threaded)."""

    def get(path: str) -> httpx.Response:
        # The oracle, asked once per batch at the end of a long run on a busy machine:
        # a dropped connection is asked again, it is not a finding about the product.
        for _ in range(2):
            try:
                return control.get(path)
            except httpx.TransportError:
                continue
        return control.get(path)

    def one(batch_id: str) -> tuple[str, dict[str, Any], dict[str, str]]:
        view = get(f"/_sim/batches/{batch_id}").raise_for_status().json()
        truth = get(f"/_sim/batches/{batch_id}/truth")
        # 409: not terminal yet; the terminal check reports it, there is no truth to compare.
        return batch_id, view, truth.json()["truth"] if truth.status_code == 200 else {}

    with ThreadPoolExecutor(threads) as pool:
        answers = list(pool.map(one, ids))
    return ServerSide(views={b: v for b, v, _ in answers}, truth={b: t for b, _, t in answers if t})


MAX_ANOMALIES_SHOWN = 20


@dataclass
class StoredSide:
    batches: dict[str, Batch]
    cancels: dict[str, CancelRequest]
    attempts: Counter[str]  # batch id -> cancel attempts recorded
    steps: dict[str, list[tuple[str | None, str | None]]]  # batch id -> status events, in order
    events: Counter[str]  # every event kind
    anomalies: list[str]  # "batch id (source): detail" of the first MAX_ANOMALIES_SHOWN
    results: dict[str, dict[str, tuple[str, str]]]  # batch -> custom_id -> (outcome, file id)
    files: dict[str, list[ResultFile]]
    line_errors: int


def _outcome(kind: str, status_code: int | None, error_code: str | None) -> str:
    """A stored row in the simulator's spelling of where the request ended up."""
    if kind == "output":
        return "output" if status_code == 200 else f"output:{status_code}"
    if error_code is not None:
        return f"error:{error_code}"
    return f"error:{status_code}"


def read_stored(db: Database) -> StoredSide:
    with db.transaction() as s:
        batches = {b.id: b for b in s.scalars(select(Batch))}
        cancels = {c.batch_id: c for c in s.scalars(select(CancelRequest))}
        attempts = Counter(s.scalars(select(CancelAttempt.batch_id)))
        steps: dict[str, list[tuple[str | None, str | None]]] = defaultdict(list)
        events: Counter[str] = Counter()
        anomalies: list[str] = []
        rows = s.execute(
            select(
                BatchEvent.batch_id,
                BatchEvent.kind,
                BatchEvent.from_status,
                BatchEvent.to_status,
                BatchEvent.source,
                BatchEvent.detail,
            ).order_by(BatchEvent.id)
        )
        for batch_id, kind, from_status, to_status, source, detail in rows:
            events[kind] += 1
            if kind == "status":
                steps[batch_id].append((from_status, to_status))
            elif kind == "anomaly" and len(anomalies) < MAX_ANOMALIES_SHOWN:
                anomalies.append(f"{batch_id} ({source}): {detail}")
        results: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
        for batch_id, custom_id, kind, file_id, status_code, error_code in s.execute(
            select(
                BatchResult.batch_id,
                BatchResult.custom_id,
                BatchResult.file_kind,
                BatchResult.file_id,
                BatchResult.status_code,
                BatchResult.error_code,
            )
        ):
            results[batch_id][custom_id] = (_outcome(kind, status_code, error_code), file_id)
        files: dict[str, list[ResultFile]] = defaultdict(list)
        for f in s.scalars(select(ResultFile)):
            files[f.batch_id].append(f)
        line_errors = s.scalar(select(func.count()).select_from(ResultLineError)) or 0
    return StoredSide(
        batches, cancels, attempts, steps, events, anomalies, results, files, line_errors
    )


# --- the invariants -----------------------------------------------------------------------


def _unix(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def expected_outcome(server_status: str) -> str:
    return "cancelled" if server_status == "cancelled" else f"too_late:{server_status}"


def check_terminal(problems: Problems, server: ServerSide, stored: StoredSide) -> None:
    """Every batch terminal in our table, with the server's status, timestamps, ids, counts."""
    for batch_id, view in server.views.items():
        status = parse_status(view["status"])
        if status is None or not status.is_terminal:
            problems.add("terminal", f"{batch_id}: the server still says {view['status']}")
        row = stored.batches.get(batch_id)
        if row is None:
            problems.add("terminal", f"{batch_id}: not in our table")
            continue
        if row.status != view["status"]:
            problems.add("terminal", f"{batch_id}: ours {row.status}, server {view['status']}")
        for name in TIMESTAMP_FIELDS:
            ours, theirs = _unix(getattr(row, name)), view[name]
            if ours != theirs:
                problems.add("timestamps", f"{batch_id}.{name}: ours {ours}, server {theirs}")
        for name in ("output_file_id", "error_file_id"):
            if getattr(row, name) != (view[name] or None):  # "" is no file
                problems.add("file_ids", f"{batch_id}.{name}: {getattr(row, name)} vs {view[name]}")
        counts = view["request_counts"]
        ours_counts = (
            row.request_counts_total,
            row.request_counts_completed,
            row.request_counts_failed,
        )
        theirs_counts = (counts["total"], counts["completed"], counts["failed"])
        if ours_counts != theirs_counts:
            problems.add("counts", f"{batch_id}: ours {ours_counts}, server {theirs_counts}")


def check_cancels(
    problems: Problems, asked: set[str], server: ServerSide, stored: StoredSide
) -> None:
    """Every cancel request closed with the outcome the server's final status implies."""
    for batch_id, view in server.views.items():
        request = stored.cancels.get(batch_id)
        if batch_id not in asked:
            if request is not None:
                problems.add("cancels", f"{batch_id}: only tracked, yet has a cancel request")
            continue
        if request is None:
            problems.add("cancels", f"{batch_id}: the cancel request was not recorded")
            continue
        want = expected_outcome(view["status"])
        if request.state != "closed" or request.outcome != want:
            problems.add(
                "cancels",
                f"{batch_id}: {request.state}/{request.outcome}, want closed/{want} "
                f"(last error: {request.last_error})",
            )
        elif request.terminal_status != view["status"]:
            problems.add("cancels", f"{batch_id}: terminal_status {request.terminal_status}")
    for batch_id in set(stored.cancels) - set(server.views):
        problems.add("cancels", f"{batch_id!r}: a cancel request for an id we never created")


def check_results(problems: Problems, server: ServerSide, stored: StoredSide) -> None:
    """batch_results equal, custom_id by custom_id, to the union of the served files."""
    if stored.line_errors:
        # The simulator never serves a bad line: one stored means a cut download was
        # taken for a complete file.
        problems.add("files", f"{stored.line_errors} unreadable line(s) stored")
    for batch_id, truth in server.truth.items():
        view = server.views[batch_id]
        file_of = {"output": view["output_file_id"], "error": view["error_file_id"]}
        expected = {c: o for c, o in truth.items() if o != "missing"}
        got = stored.results.get(batch_id, {})
        outcomes = {c: o for c, (o, _) in got.items()}
        if outcomes != expected:
            missing = len(expected.keys() - outcomes.keys())
            extra = len(outcomes.keys() - expected.keys())
            wrong = sum(1 for c in expected.keys() & outcomes.keys() if expected[c] != outcomes[c])
            problems.add(
                "results",
                f"{batch_id}: {len(outcomes)} rows for {len(expected)} expected: "
                f"{missing} missing, {extra} extra, {wrong} wrong",
            )
        misfiled = [
            c for c, (o, f) in got.items() if f != file_of["output" if o == "output" else "error"]
        ]
        if misfiled:
            problems.add("results", f"{batch_id}: {len(misfiled)} rows name the wrong file")
        row = stored.batches.get(batch_id)
        if row is None:
            continue
        if row.harvest_state != "done" or row.results_stored != len(expected):
            problems.add(
                "harvest",
                f"{batch_id}: harvest {row.harvest_state}, results_stored {row.results_stored} "
                f"of {len(expected)} (last error: {row.last_error})",
            )
        _check_files(problems, batch_id, file_of, stored.files.get(batch_id, []))


def _check_files(
    problems: Problems, batch_id: str, file_of: dict[str, str | None], files: list[ResultFile]
) -> None:
    served = {f for f in file_of.values() if f}
    if {f.file_id for f in files} != served:
        problems.add("files", f"{batch_id}: files {sorted(f.file_id for f in files)} != {served}")
    for f in files:
        if not (f.state == "done" and f.lines == f.lines_committed == f.results):
            problems.add(
                "files",
                f"{f.file_id}: {f.state}, {f.lines} lines, {f.lines_committed} committed, "
                f"{f.results} stored",
            )
        if f.malformed or f.duplicates:
            problems.add("files", f"{f.file_id}: {f.malformed} malformed, {f.duplicates} dup")


def check_files_bytes(
    problems: Problems, control: httpx.Client, stored: StoredSide, file_ids: list[str]
) -> int:
    """Download files again (faults off) and compare size, line count and SHA-256."""
    by_id = {f.file_id: f for files in stored.files.values() for f in files}
    checked = 0
    for file_id in file_ids:
        row = by_id.get(file_id)
        if row is None:
            continue  # already reported by the files check
        body = _download(control, file_id)
        digest = hashlib.sha256(body).hexdigest()
        lines = body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1)
        if (row.bytes, row.lines, row.sha256) != (len(body), lines, digest):
            problems.add(
                "bytes",
                f"{file_id}: stored {row.bytes} B/{row.lines} lines/{row.sha256}, "
                f"served {len(body)} B/{lines} lines/{digest}",
            )
        checked += 1
    return checked


def _download(control: httpx.Client, file_id: str) -> bytes:
    """A file's bytes; a 429 of the simulator's rate-limit mode (``--budget``) waits it out."""
    for _ in range(20):
        answer = control.get(f"/v1/files/{file_id}/content")
        if answer.status_code != 429:
            return answer.raise_for_status().content
        time.sleep(float(answer.headers.get("retry-after", "1")))  # as the server asks
    return answer.raise_for_status().content


def check_budget(
    problems: Problems, figures: Figures, counters: dict[str, Any], budget: float | None
) -> None:
    """With a request budget: the simulator never served more in one second than the
    budget and one burst of it, and its rate limit (twice the budget) refused nothing."""
    limit = counters.get("rate_limit")
    if budget is None or limit is None:
        return
    allowed = budget + BudgetRule(budget).burst
    peak, refused = limit["peak_one_second"], limit["refused"]
    figures.line(
        "request budget",
        f"{budget:g}/s: peak {peak} served in one second (allowed {allowed:g}), "
        f"{refused} refused by the simulator's limit of {limit['per_second']:g}/s",
    )
    if peak > allowed:
        problems.add("budget", f"{peak} requests served in one second, budget {budget:g}/s")
    if refused:
        problems.add("budget", f"{refused} requests refused by a limit twice the budget")


def check_transitions(problems: Problems, stored: StoredSide) -> None:
    """Every stored status change is a legal edge, and each batch's chain is unbroken."""
    machine = lifecycle()
    for batch_id, row in stored.batches.items():
        steps = stored.steps.get(batch_id, [])
        if not steps:
            if row.status is not None:
                problems.add("transitions", f"{batch_id}: status {row.status} but no history")
            continue
        previous: str | None = None
        for n, (source, dest) in enumerate(steps):
            if source != previous:
                problems.add(
                    "transitions", f"{batch_id} step {n}: from {source}, but it was {previous}"
                )
            if dest is None or parse_status(dest) is None:
                problems.add("transitions", f"{batch_id} step {n}: to {dest!r}")
                break
            if source is not None and (
                parse_status(source) is None
                or machine.trigger_for(BatchStatus(source), BatchStatus(dest)) is None
            ):
                problems.add("transitions", f"{batch_id}: illegal {source} -> {dest}")
            previous = dest
        if previous != row.status:
            problems.add("transitions", f"{batch_id}: history ends {previous}, row {row.status}")


def check_cancel_traffic(problems: Problems, counters: dict[str, Any]) -> None:
    """Never two cancels of one batch at once on the server; never a hot loop."""
    overlap = counters["max_concurrent_cancels_any_batch"]
    if overlap > 1:
        worst = [b for b, n in counters["max_concurrent_cancels"].items() if n > 1]
        problems.add("one_cancel_at_a_time", f"{overlap} at once for {worst[:_EXAMPLES]}")
    per_batch = counters["requests"].get("cancel", {})
    for batch_id, n in per_batch.items():
        if n > HOT_LOOP_BOUND:
            problems.add("no_hot_loop", f"{batch_id}: {n} cancels served")


@dataclass
class Figures:
    """What the run did, for the report."""

    values: dict[str, Any] = field(default_factory=dict)

    def line(self, name: str, value: Any) -> None:
        self.values[name] = value


def stored_figures(figures: Figures, server: ServerSide, stored: StoredSide) -> None:
    figures.line("final status", dict(Counter(v["status"] for v in server.views.values())))
    figures.line("cancel outcomes", dict(Counter(str(c.outcome) for c in stored.cancels.values())))
    figures.line("result rows", sum(len(r) for r in stored.results.values()))
    figures.line("result files", sum(len(f) for f in stored.files.values()))
    figures.line("cancel attempts recorded", sum(stored.attempts.values()))
    figures.line("most attempts for one batch", max(stored.attempts.values(), default=0))
    figures.line("events", dict(stored.events.most_common()))
    if stored.anomalies:  # not a failure (docs/soak.md), but each should be explained
        figures.line("anomalies", stored.anomalies)

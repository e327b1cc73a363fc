"""The simulator's state: batches, files, faults and counters behind one lock.

The ``api_*`` methods are what the HTTP server calls; they return JSON-ready dicts
or raise ``HttpError``. Everything else is the Python control surface for tests
and demos. The clock is read once per call and the status of each batch is
computed from it (see ``scenario.py``), so no background thread exists.
"""

from __future__ import annotations

import bisect
import dataclasses
import random
import string
import threading
from collections.abc import Mapping
from typing import Any

from orchestrator.clock import Clock, SystemClock

from .config import BATCH_ENDPOINTS, SimulatorConfig
from .counters import Counters
from .errors import HttpError, bad_request, batch_not_found, file_not_found
from .faults import FaultBook, FaultRule
from .files import BatchSnapshot, FileContent, FileKind, batch_file_lines, input_lines
from .inputs import parse_create, parse_input_file, validate_metadata
from .rate_limit import RateLimiter
from .records import BatchRecord, FileRecord, batch_json
from .scenario import (
    CANCELLABLE,
    Phase,
    Scenario,
    Timeline,
    ends_at,
    natural_phase,
    phase_at,
)
from .webhooks import WebhookSender

FILE_PURPOSES = frozenset({"batch", "fine-tune", "assistants", "vision", "user_data", "evals"})
_ALNUM = string.ascii_letters + string.digits


class Simulator:
    """A thread-safe, in-memory OpenAI Batch API."""

    def __init__(self, config: SimulatorConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._rng = random.Random(self.config.seed)
        self._batches: dict[str, BatchRecord] = {}
        self._order: list[tuple[float, int, str]] = []
        self._files: dict[str, FileRecord] = {}
        self._faults = FaultBook(self.config.seed)
        self._counters = Counters()
        self.rate_limiter = RateLimiter.of(self.config)  # rate-limit mode, when configured
        self.webhooks: WebhookSender | None = None
        if self.config.webhook_urls:
            self.webhooks = WebhookSender(
                self.config.webhook_urls,
                self.config.webhook_secret,
                self.clock,
                attempts=self.config.webhook_attempts,
                retry_s=self.config.webhook_retry_s,
                seed=self.config.seed,
            )
            self.webhooks.source = self._webhook_event
            self.webhooks.fault = self._webhook_fault

    # ----------------------------------------------------------------- helpers

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def _new_batch_id(self) -> str:
        return f"batch_{self._rng.getrandbits(128):032x}"

    def _new_file_id(self) -> str:
        return "file-" + "".join(self._rng.choices(_ALNUM, k=24))

    def _batch(self, batch_id: str) -> BatchRecord:
        record = self._batches.get(batch_id)
        if record is None:
            raise batch_not_found(batch_id)
        return record

    def _add_batch(self, record: BatchRecord) -> None:
        self._batches[record.id] = record
        bisect.insort(self._order, record.sort_key)
        if self.webhooks is not None:
            self.webhooks.watch(record.id, ends_at(record.timeline))

    def _webhook_event(self, batch_id: str) -> tuple[str, float] | float | None:
        """For the sender: (status, when) the first time the batch is seen ended; when
        to look again if it has not; None when there is nothing (more) to announce."""
        with self._lock:
            record = self._batches.get(batch_id)
            if record is None or record.announced:
                return None
            phase = phase_at(record.timeline, self._now())
            if not phase.terminal:
                return ends_at(record.timeline)
            record.announced = True
            ended = phase.completed_at or phase.failed_at or phase.expired_at or phase.cancelled_at
            return phase.status, float(ended or self._now())

    def _webhook_fault(self, batch_id: str) -> FaultRule | None:
        with self._lock:
            rule = self._faults.pick("webhook", batch_id, None)
            if rule is not None:
                self._counters.faults[rule.kind] += 1
            return rule

    def _snapshot(self, record: BatchRecord, phase: Phase) -> BatchSnapshot:
        return BatchSnapshot(
            batch_id=record.id,
            model=record.model,
            endpoint=record.endpoint,
            timeline=record.timeline,
            phase=phase,
            failures=record.failures(),
            custom_id=record.custom_id,
        )

    def _ensure_files(self, record: BatchRecord, phase: Phase) -> None:
        """Give a terminal batch its output/error file ids (null when a file would be empty)."""
        if record.files_assigned:
            return
        record.files_assigned = True
        snapshot = self._snapshot(record, phase)
        n_output, n_error = snapshot.line_counts()
        ended = phase.completed_at or phase.cancelled_at or phase.expired_at or phase.failed_at
        created = int(ended or self._now())
        shuffle = record.scenario.shuffle_output
        body_bytes = record.scenario.body_bytes
        kinds: tuple[tuple[FileKind, int], ...] = (("output", n_output), ("error", n_error))
        for kind, count in kinds:
            if count == 0:
                continue
            file_id = self._new_file_id()
            lines = batch_file_lines(
                snapshot, kind, file_id, shuffle=shuffle, body_bytes=body_bytes
            )
            self._files[file_id] = FileRecord(
                id=file_id,
                purpose="batch_output",
                filename=f"{record.id}_{kind}.jsonl",
                created_at=created,
                content=FileContent(lines=lines),
                batch_id=record.id,
            )
            if kind == "output":
                record.output_file_id = file_id
            else:
                record.error_file_id = file_id

    def _view(self, record: BatchRecord, now: float, *, poll: bool) -> dict[str, Any]:
        phase = phase_at(record.timeline, now)
        output_id: str | None = None
        error_id: str | None = None
        if phase.terminal:
            self._ensure_files(record, phase)
            lagging = record.terminal_views < record.scenario.file_ids_lag_polls
            if poll:
                record.terminal_views += 1
            if not lagging:
                output_id, error_id = record.output_file_id, record.error_file_id
                if error_id is None and record.scenario.empty_string_error_file:
                    error_id = ""
        return batch_json(record, phase, output_id, error_id)

    # --------------------------------------------------------- request hooks

    def on_request(
        self,
        endpoint: str,
        batch_id: str | None,
        file_id: str | None,
        *,
        authorized: bool = True,
        key: str = "",
    ) -> FaultRule | None:
        """Count a request and pick the fault to inject into it (rate-limit mode first).

        For an authorized cancel the caller must call ``cancel_finished`` when done.
        """
        with self._lock:
            self._counters.request(endpoint, batch_id or file_id)
            if not authorized:
                return None
            if endpoint == "cancel" and batch_id is not None:
                self._counters.cancel_started(batch_id)
            limited = self.rate_limiter and self.rate_limiter.check(key, endpoint, self._now())
            rule = limited or self._faults.pick(endpoint, batch_id, file_id)
            if rule is not None:
                self._counters.faults[rule.kind] += 1
            return rule

    def cancel_finished(self, batch_id: str) -> None:
        with self._lock:
            self._counters.cancel_finished(batch_id)

    # -------------------------------------------------------------- the API

    def api_retrieve(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            return self._view(self._batch(batch_id), self._now(), poll=True)

    def api_cancel(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            record = self._batch(batch_id)
            now = self._now()
            status = phase_at(record.timeline, now).status
            if status in CANCELLABLE:
                record.timeline = dataclasses.replace(record.timeline, cancel_at=now)
                self._counters.cancels_applied += 1
                if self.webhooks is not None:
                    self.webhooks.watch(batch_id, ends_at(record.timeline))
            elif status not in ("cancelling", "cancelled"):
                raise HttpError(
                    self.config.cancel_terminal_status,
                    f"Cannot cancel a batch with status '{status}'.",
                )
            return self._view(record, now, poll=True)

    def api_list(self, after: str | None, limit: int) -> dict[str, Any]:
        with self._lock:
            end = len(self._order)
            if after is not None:
                cursor = self._batches.get(after)
                if cursor is None:
                    raise bad_request(f"No batch found with id '{after}'.", "after")
                end = bisect.bisect_left(self._order, cursor.sort_key)
            start = max(0, end - limit)
            now = self._now()
            data = [
                self._view(self._batches[key[2]], now, poll=True)
                for key in reversed(self._order[start:end])
            ]
            return {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": start > 0,
            }

    def api_create_file(self, purpose: str | None, filename: str, data: bytes) -> dict[str, Any]:
        if purpose not in FILE_PURPOSES:
            raise bad_request(f"Invalid value for 'purpose': {purpose!r}.", "purpose")
        with self._lock:
            record = FileRecord(
                id=self._new_file_id(),
                purpose=purpose,
                filename=filename,
                created_at=int(self._now()),
                content=FileContent(data),
            )
            self._files[record.id] = record
            return record.api_view()

    def api_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            record = self._files.get(file_id)
        if record is None:
            raise file_not_found(file_id)
        return record.api_view()

    def api_delete_file(self, file_id: str) -> dict[str, Any]:
        """``DELETE /files/{id}``: gone for good; a second delete is a 404, as on the API."""
        with self._lock:
            record = self._files.pop(file_id, None)
        if record is None:
            raise file_not_found(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    def file_ids(self) -> list[str]:
        """Every file the simulator holds (control surface, for tests)."""
        with self._lock:
            return sorted(self._files)

    def file_content(self, file_id: str) -> FileContent:
        with self._lock:
            record = self._files.get(file_id)
        if record is None:
            raise file_not_found(file_id)
        return record.content

    def api_create_batch(self, body: object) -> dict[str, Any]:
        request = parse_create(body)
        with self._lock:
            upload = self._files.get(request.input_file_id)
            if upload is None or upload.purpose != "batch" or upload.batch_id is not None:
                raise bad_request(
                    f"Invalid 'input_file_id': no batch input file '{request.input_file_id}'.",
                    "input_file_id",
                )
        parsed = parse_input_file(upload.content.read(), request.endpoint)
        scenario = self.config.scenario.with_overrides(request.overrides)
        if parsed.error is not None:
            scenario = dataclasses.replace(scenario, fail_validation=True)
        with self._lock:
            now = self._now()
            record = BatchRecord(
                id=self._new_batch_id(),
                seq=len(self._batches),
                timeline=Timeline(
                    created_at=now,
                    total=len(parsed.custom_ids),
                    scenario=scenario,
                    time_scale=self.config.time_scale,
                ),
                endpoint=request.endpoint,
                model=parsed.model or self.config.model,
                input_file_id=upload.id,
                metadata=request.metadata,
                custom_ids=parsed.custom_ids,
                validation_error=parsed.error,
            )
            self._add_batch(record)
            return self._view(record, now, poll=False)

    # ------------------------------------------------------ control surface

    def create_batch(
        self,
        requests: int,
        scenario: Scenario | None = None,
        *,
        age_s: float = 0.0,
        metadata: Mapping[str, str] | None = None,
        cancel_after_s: float | None = None,
        model: str | None = None,
        endpoint: str | None = None,
    ) -> str:
        """Create a batch of ``requests`` requests (custom_ids ``req-0..N-1``); return its id.

        ``age_s`` (scenario seconds) backdates it so it is already that far into its
        life. ``cancel_after_s`` (scenario seconds after creation) records a cancel
        that arrived then; it must fall while the batch was still cancellable.
        """
        if requests < 0:
            raise ValueError("requests must be >= 0")
        if age_s < 0:
            raise ValueError("age_s must be >= 0")
        endpoint = endpoint or self.config.endpoint
        if endpoint not in BATCH_ENDPOINTS:
            raise ValueError(f"unsupported endpoint {endpoint!r}")
        meta = validate_metadata(dict(metadata) if metadata is not None else None)
        scale = self.config.time_scale
        with self._lock:
            created = self._now() - age_s / scale
            timeline = Timeline(
                created_at=created,
                total=requests,
                scenario=scenario or self.config.scenario,
                time_scale=scale,
            )
            if cancel_after_s is not None:
                cancel_at = created + cancel_after_s / scale
                status = natural_phase(timeline, cancel_at).status
                if status not in CANCELLABLE:
                    raise ValueError(f"cancel_after_s falls when the batch is already {status}")
                timeline = dataclasses.replace(timeline, cancel_at=cancel_at)
            record = BatchRecord(
                id=self._new_batch_id(),
                seq=len(self._batches),
                timeline=timeline,
                endpoint=endpoint,
                model=model or self.config.model,
                input_file_id=self._new_file_id(),
                metadata=meta,
            )
            lines = input_lines(requests, record.custom_id, endpoint, record.model)
            self._files[record.input_file_id] = FileRecord(
                id=record.input_file_id,
                purpose="batch",
                filename=f"{record.id}_input.jsonl",
                created_at=int(created),
                content=FileContent(lines=lines),
            )
            self._add_batch(record)
            return record.id

    def batch(self, batch_id: str) -> dict[str, Any]:
        """The API view of a batch now, without counting a request or using up a lagging poll."""
        with self._lock:
            return self._view(self._batch(batch_id), self._now(), poll=False)

    def batch_ids(self) -> list[str]:
        """Every batch id, oldest first."""
        with self._lock:
            return [key[2] for key in self._order]

    def truth(self, batch_id: str) -> dict[str, str]:
        """Ground truth of a terminal batch: custom_id -> ``Outcome`` value.

        ``output`` (in the output file), ``error:400`` (error file, HTTP 400 response),
        ``error:batch_cancelled`` / ``error:batch_expired`` (error file, error.code), or
        ``missing`` (in no file: failed validation, or a cancel that ended ``failed``).
        """
        with self._lock:
            record = self._batch(batch_id)
            phase = phase_at(record.timeline, self._now())
            if not phase.terminal:
                raise HttpError(409, f"Batch '{batch_id}' is not terminal yet ({phase.status}).")
            self._ensure_files(record, phase)
            snapshot = self._snapshot(record, phase)
        total = record.timeline.total
        return {snapshot.custom_id(i): snapshot.outcome(i).value for i in range(total)}

    def add_fault(self, rule: FaultRule) -> None:
        with self._lock:
            self._faults.add(rule)

    def add_faults(self, rules: list[FaultRule]) -> None:
        with self._lock:
            for rule in rules:
                self._faults.add(rule)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        """The active rules, each with its ``remaining`` count (null: unlimited)."""
        with self._lock:
            return self._faults.active()

    def counters(self) -> dict[str, Any]:
        with self._lock:
            snapshot = self._counters.snapshot()
            snapshot["batches"] = len(self._batches)
            snapshot["files"] = len(self._files)
            if self.rate_limiter is not None:
                snapshot["rate_limit"] = self.rate_limiter.snapshot()
        if self.webhooks is not None:
            snapshot["webhooks"] = self.webhooks.snapshot()
        return snapshot

    def served(self, endpoint: str, key: str | None = None) -> int:
        """Requests served for an endpoint, optionally for one batch/file id ('' for none)."""
        with self._lock:
            return self._counters.served(endpoint, key)

    def reset_counters(self) -> None:
        with self._lock:
            self._counters = Counters()

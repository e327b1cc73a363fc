"""A small typed Python API: what `cancel`, `track`, `show` and `results` do, for a
program that would rather not run a subprocess.

    from orchestrator import Orchestrator

    with Orchestrator("sqlite:///orchestrator.sqlite3") as orch:
        orch.cancel(["batch_abc"], reason="budget freeze")
        print(orch.batch("batch_abc").status)

It is the command line's own path, not a second one: the same settings (a URL given
here, else ORCHESTRATOR_DATABASE_URL and the config file), the same stores and rules
(ids checked by `core.ids`, a cancel recorded durably and sent by the worker, the
database's clock for every time). Nothing here talks to the Batch API: the worker and
the reconciler do, as they do for the command line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.cli.cancel_args import MAX_BY
from orchestrator.cli.who import os_user
from orchestrator.core.harvest import HarvestState
from orchestrator.core.ids import BATCH_PREFIX, validate_batch_id
from orchestrator.core.status import UNOBSERVED, parse_status
from orchestrator.db.batches import BatchStore
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.queries import OperatorQueries, ResultRow
from orchestrator.db.server_clock import database_clock
from orchestrator.errors import InvalidBatchId, UnknownBatch
from orchestrator.settings import load_settings

__all__ = ["BatchState", "CancelReceipt", "Orchestrator", "ResultRow"]


@dataclass(frozen=True)
class CancelReceipt:
    """What `cancel` recorded: each id in one list."""

    requested: list[str] = field(default_factory=list)  # new requests
    already_requested: list[str] = field(default_factory=list)  # asked before: left alone
    reopened: list[str] = field(default_factory=list)  # had failed: asked again
    ended_already: dict[str, str] = field(default_factory=dict)  # id -> outcome (too late)


@dataclass(frozen=True)
class BatchState:
    """One batch as `show` leads with it. Times are the server's; `status` is
    "unobserved" until the API has answered for the batch."""

    id: str
    status: str
    created_at: datetime | None
    terminal: bool
    overdue: bool
    cancel_state: str | None  # pending, accepted, closed, failed; None: never asked
    cancel_outcome: str | None  # cancelled, too_late:completed, ...
    answers: int  # output-file lines kept (the paid-for results)
    errors: int  # error-file lines kept
    unreadable_lines: int
    harvest_state: str  # waiting, pending, done, missing, retrying
    next_poll_at: datetime | None  # None: not polled any more
    next_cancel_attempt_at: datetime | None
    last_error: str | None
    request_counts: tuple[int, int, int] | None  # (completed, failed, total)
    metadata: dict[str, Any] | None

    @property
    def done(self) -> bool:
        """Finished and harvested: nothing more will happen to it."""
        return self.terminal and self.harvest_state == HarvestState.DONE


class Orchestrator:
    """A connection to the orchestrator's database. Close it (or use `with`)."""

    def __init__(self, database_url: str | None = None, *, user: str | None = None) -> None:
        """`user`: who asks, kept with each cancel (default: the OS user). At most
        MAX_BY (128) characters, as the command line's `--by`: ValueError otherwise."""
        if user is not None and len(user) > MAX_BY:
            raise ValueError(f"user: expected at most {MAX_BY} characters, got {len(user):,}")
        overrides = {"database_url": database_url} if database_url is not None else {}
        settings = load_settings(overrides=overrides)
        self._db = Database.connect(settings.database_url, pool_size=2)
        self._user = user or os_user()

    def close(self) -> None:
        self._db.dispose()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _now(self) -> datetime:
        return database_clock(self._db).now()

    def _checked(self, batch_ids: Iterable[str], any_id: bool) -> list[str]:
        """The ids, as `cancel` and `track` take a new one: well formed, and tracked
        already or beginning BATCH_PREFIX (`any_id`: any form, the CLI's --any-id).
        Unlike the CLI a beginning of a tracked id is not expanded: a program names
        the batch it means. InvalidBatchId naming every id refused, before any is
        recorded."""
        ids = list(dict.fromkeys(validate_batch_id(i) for i in batch_ids))
        if any_id:
            return ids
        untracked = [i for i in ids if not i.startswith(BATCH_PREFIX)]
        if untracked:
            known = OperatorQueries(self._db).known_ids(untracked)
            refused = [i for i in untracked if i not in known]
            if refused:
                raise InvalidBatchId(
                    f"not tracked, and not a batch id (they begin {BATCH_PREFIX}): "
                    f"{', '.join(refused)}; check them, or pass any_id=True for ids of "
                    "another form"
                )
        return ids

    def cancel(
        self, batch_ids: Iterable[str], *, reason: str | None = None, any_id: bool = False
    ) -> CancelReceipt:
        """Record that these batches must be cancelled; returns at once (the worker
        sends them). Asking twice is harmless. Raises InvalidBatchId for an id that
        cannot be one, or is not tracked and does not begin BATCH_PREFIX (unless
        `any_id`), before recording any."""
        ids = self._checked(batch_ids, any_id)
        summary = CancelStore(self._db).request(
            ids, now=self._now(), requested_by=self._user, reason=reason
        )
        return CancelReceipt(
            requested=list(summary.new),
            already_requested=list(summary.already),
            reopened=list(summary.reopened),
            ended_already=dict(summary.closed_at_once),
        )

    def track(self, batch_ids: Iterable[str], *, any_id: bool = False) -> list[str]:
        """Follow these batches and harvest their results, without cancelling them.
        Returns the ids that were not tracked before. Ids are checked as `cancel`'s."""
        ids = self._checked(batch_ids, any_id)
        return BatchStore(self._db).track(ids, now=self._now(), source="track")

    def batch(self, batch_id: str) -> BatchState:
        """A tracked batch's state now. Raises UnknownBatch if it is not tracked."""
        detail = OperatorQueries(self._db).detail(validate_batch_id(batch_id))
        if detail is None:
            raise UnknownBatch(f"batch {batch_id} is not tracked here")
        row: dict[str, Any] = detail.batch
        request: dict[str, Any] = detail.cancel_request or {}
        status = parse_status(row["status"]) if row["status"] else None
        total = row["request_counts_total"]
        counts = (
            (row["request_counts_completed"] or 0, row["request_counts_failed"] or 0, total)
            if total is not None
            else None
        )
        return BatchState(
            id=row["id"],
            status=row["status"] or UNOBSERVED,
            created_at=row["created_at"],
            terminal=status is not None and status.is_terminal,
            overdue=row["overdue_since"] is not None,
            cancel_state=request.get("state"),
            cancel_outcome=request.get("outcome"),
            answers=detail.results_by_kind.get("output", 0),
            errors=detail.results_by_kind.get("error", 0),
            unreadable_lines=detail.unreadable_lines,
            harvest_state=row["harvest_state"],
            next_poll_at=row["next_poll_at"],
            next_cancel_attempt_at=request.get("next_attempt_at"),
            last_error=row["last_error"],
            request_counts=counts,
            metadata=row["metadata"],
        )

    def results(self, batch_id: str, *, kind: str | None = None) -> Iterator[ResultRow]:
        """Every stored result line of a batch in custom_id order, `kind` "output"
        (answers) or "error", streamed a page at a time (constant memory)."""
        if kind not in (None, "output", "error"):
            raise ValueError(f"kind must be 'output', 'error' or None, not {kind!r}")
        return OperatorQueries(self._db).iter_results(validate_batch_id(batch_id), kind=kind)

"""What the reconciler's passes did, merged across its threads, for reports and exit codes."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from orchestrator.db.polls import Attention
from orchestrator.processes.recent import RECENT_KEPT, keep_recent, put_last

LISTED = (
    "files_missing",
    "files_failed",
    "newly_overdue",
    "unknown",
    "cancels_closed",
    "anomalies",
    "errors",
)
"""The fields that list what was counted, an entry per batch (or per file, per error)."""


@dataclass
class PassSummary:
    """What one or more passes did; ``attention`` is filled by ``check_attention``.

    A pass's summary lists every entry. A long-running process's total (``lifetime``)
    keeps only the most recent ``RECENT_KEPT`` entries of each list (``recent.py``), and
    counts in ``left_out`` the older ones each list let go; every count stays exact."""

    passes: int = 0
    claimed: int = 0
    polled: int = 0
    list_pages: int = 0  # GET /v1/batches pages that observed batches (list_observation.py)
    poll_failures: int = 0
    became_terminal: int = 0
    harvested: int = 0  # batches whose harvest settled (done or missing)
    results_stored: int = 0  # new rows
    duplicates: int = 0
    line_errors: int = 0
    files_done: int = 0
    files_missing: list[str] = field(default_factory=list)
    files_failed: list[str] = field(default_factory=list)
    newly_overdue: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # never seen, still 404: let go
    cancels_closed: dict[str, str] = field(default_factory=dict)
    anomalies: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # unexpected, each on one batch
    lost_leases: int = 0
    released: int = 0
    auth_error: str | None = None
    db_outages: int = 0
    stopped: bool = False
    attention: Attention | None = None
    left_out: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LISTED, 0))
    keep: int | None = None  # entries each list keeps (the most recent); None: all
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def needs_attention(self) -> bool:
        if self.auth_error is not None or self.unknown or self.errors:
            return True
        if self.attention is not None:
            return bool(self.attention.overdue or self.attention.files)
        return bool(self.files_missing or self.files_failed or self.newly_overdue)

    def merge(self, other: PassSummary) -> None:
        with self._lock:
            for name in (
                "passes",
                "claimed",
                "polled",
                "list_pages",
                "poll_failures",
                "became_terminal",
                "harvested",
                "results_stored",
                "duplicates",
                "line_errors",
                "files_done",
                "lost_leases",
                "released",
                "db_outages",
            ):
                setattr(self, name, getattr(self, name) + getattr(other, name))
            self.files_missing += other.files_missing
            self.files_failed += other.files_failed
            self.newly_overdue += other.newly_overdue
            self.unknown += other.unknown
            for batch_id, outcome in other.cancels_closed.items():
                put_last(self.cancels_closed, batch_id, outcome)
            self.anomalies += other.anomalies
            self.errors += other.errors
            self.auth_error = other.auth_error or self.auth_error
            self.stopped = self.stopped or other.stopped
            for name in LISTED:
                self.left_out[name] += other.left_out[name]
                if self.keep is not None:
                    self.left_out[name] += keep_recent(getattr(self, name), self.keep)

    @classmethod
    def lifetime(cls) -> PassSummary:
        """The total of a process's passes for as long as it runs: bounded, whatever
        it met (an error on every poll for months lists the last ``RECENT_KEPT``)."""
        return cls(keep=RECENT_KEPT)

    def to_dict(self) -> dict[str, object]:
        data = {
            k: v
            for k, v in vars(self).items()
            if not k.startswith("_") and k not in ("attention", "keep")
        }
        if self.attention is not None:
            data["overdue"] = [
                {"batch_id": b, "status": s, "overdue_since": t.isoformat()}
                for b, s, t in self.attention.overdue
            ]
            data["unharvested_files"] = [
                {"batch_id": b, "file_id": f, "state": s, "error": e}
                for b, f, s, e in self.attention.files
            ]
        data["needs_attention"] = self.needs_attention
        return data

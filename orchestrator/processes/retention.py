"""`orchestrator prune` and the reconciler's periodic prune: ended batches lose old rows.

With an archive, every row to be removed is first written to a gzip-compressed
JSONL file, which is closed and fsynced (with its directory) before the first
delete; only results up to the last one archived are then removed. Each result's
body is written as its stored text, never decoded and encoded again: once pruned,
the archive is its only copy. The file is created exclusively and never through a
symlink: an existing file or link is an error, never overwritten or followed.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

from orchestrator.core import json_text
from orchestrator.db.retention import PruneCounts, RetentionStore
from orchestrator.errors import ConfigError

__all__ = ["PrunePlan", "Pruner", "exclusive_file"]

PAGE_BATCHES = 500


@dataclass
class PrunePlan:
    cutoff: datetime
    batch_ids: list[str] = field(default_factory=list)
    counts: PruneCounts = field(default_factory=PruneCounts)


@contextmanager
def exclusive_file(path: Path) -> Iterator[IO[bytes]]:
    """A new file at ``path`` (mode 0600), fsynced with its directory on success, removed
    on failure. Refuses an existing file and a symlink (O_EXCL never follows one)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigError(f"--archive {path}: the file exists; name a new file") from None
    except OSError as exc:
        raise ConfigError(f"--archive {path}: cannot create it ({exc.strerror})") from None
    handle = os.fdopen(fd, "wb")
    try:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
    except BaseException:
        handle.close()
        path.unlink(missing_ok=True)
        raise
    handle.close()
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class Pruner:
    def __init__(self, store: RetentionStore, *, on_chunk: Callable[[], None] = lambda: None):
        self.store = store
        self.on_chunk = on_chunk

    def plan(self, older_than: timedelta, *, count: bool = True) -> PrunePlan:
        plan = PrunePlan(self.store.cutoff(older_than))
        after: str | None = None
        while True:
            page = self.store.ended_before(plan.cutoff, after=after, limit=PAGE_BATCHES)
            if count:
                plan.counts.add(self.store.count(page, plan.cutoff))
            plan.batch_ids += page
            if len(page) < PAGE_BATCHES:
                break
            after = page[-1]
        plan.counts.batches = len(plan.batch_ids)
        if count:
            plan.counts.webhook_events = self.store.count_webhook_events(plan.cutoff)
        return plan

    def prune(self, plan: PrunePlan, *, archive: Path | None = None) -> PruneCounts:
        """Remove the planned rows (archived first when ``archive`` is given)."""
        limits: dict[str, int] = {}
        if archive is not None:
            limits = self._archive(plan, archive)
        done = PruneCounts()
        for batch_id in plan.batch_ids:
            done.add(
                self.store.prune_batch(
                    batch_id,
                    plan.cutoff,
                    max_result_id=limits.get(batch_id, 0) if archive is not None else None,
                    on_chunk=self.on_chunk,
                )
            )
        done.webhook_events = self.store.prune_webhook_events(plan.cutoff, on_chunk=self.on_chunk)
        return done

    def _archive(self, plan: PrunePlan, path: Path) -> dict[str, int]:
        """Write every row to be pruned; returns each batch's last archived result id."""
        limits: dict[str, int] = {}
        with exclusive_file(path) as raw, gzip.GzipFile(fileobj=raw, mode="wb") as out:
            for batch_id in plan.batch_ids:
                for result_id, record in self.store.iter_archive(batch_id):
                    out.write(json_text.dumps(record) + b"\n")
                    limits[batch_id] = max(limits.get(batch_id, 0), result_id)
        return limits

"""The reconciler's list walk: observe many in-flight batches a page at a time.

``GET /v1/batches?limit=100`` returns full Batch objects, newest first, so one page
observes up to 100 batches for the price of one GET. With at least ``min_tracked``
in-flight batches tracked, as soon as one is due the reconciler walks the list from
the top before its usual claims: every in-flight batch of ours on a page that no
other process holds is recorded, due or not yet (early is allowed: the poll policy
asks for at least so often), each page in one transaction (db/list_polls.py). The
walk goes on while batches due within ``HORIZON`` are left unobserved, so one walk
serves every batch falling due in the next minute, not one batch each. Whatever it
did not reach is still due, and the claims after it poll those with single GETs.

The walk stops where GETs cost less:
- fewer than ``min_tracked`` in-flight batches are tracked, or none is due now;
- nothing due within the horizon is left unobserved;
- the page reached is older than the oldest of those (newest first: it cannot come);
- two pages in a row observed fewer than ``MIN_YIELD`` of ours (other systems'
  batches fill the list);
- the end of the list.
The order is not documented (reference section 6.2); if it is not newest first, only
the third rule is wrong, and it only ends the walk early: GETs do the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orchestrator.api.client import BatchApiClient
from orchestrator.api.pages import pages
from orchestrator.clock import Clock
from orchestrator.core.observation import BatchObservation, MalformedBatch, parse_batch
from orchestrator.core.poll_policy import PollPolicy
from orchestrator.db.list_polls import ListPollStore
from orchestrator.db.polls import PollRecord
from orchestrator.errors import ApiError, InvalidBatchId

__all__ = ["LIST_PAGE", "ListObserver", "Walk"]

log = logging.getLogger(__name__)

LIST_PAGE = 100  # the API's largest page
HORIZON = timedelta(seconds=60)  # a walk also observes what falls due this soon
MIN_YIELD = 10  # a page observing fewer of ours costs more than a tenth of a GET each


@dataclass
class Walk:
    due: int = 0  # batches due when it began: polls the policy asked for
    started: datetime | None = None  # when it began (None: it did not walk)
    pages: int = 0
    records: list[PollRecord] = field(default_factory=list)
    stopped: str = ""  # why the walk ended


class ListObserver:
    def __init__(
        self,
        client: BatchApiClient,
        store: ListPollStore,
        *,
        clock: Clock,
        owner: str,
        policy: PollPolicy,
        lease_seconds: float,
        min_tracked: int,
        random_unit: Callable[[], float],
        webhooks: Callable[[], bool],
        on_page: Callable[[], bool] = lambda: True,
    ) -> None:
        self.client, self.store, self.clock, self.owner = client, store, clock, owner
        self.policy, self.lease_seconds = policy, lease_seconds
        self.min_tracked, self.random_unit, self.webhooks = min_tracked, random_unit, webhooks
        self.on_page = on_page  # between pages: the loop is alive; False: stop walking

    def walk(self) -> Walk:
        walk = Walk()
        due = self.store.due(self.clock.now(), HORIZON)
        if due.tracked < max(1, self.min_tracked) or due.now == 0:
            walk.stopped = f"{due.now} due of {due.tracked} in flight: no walk"
            return walk
        walk.due, walk.started = due.now, self.clock.now()
        listed = pages(self.client.iter_batches(limit=LIST_PAGE), LIST_PAGE)
        lean = 0
        while self.on_page():
            started = self.clock.now()  # the page's GET begins: what a poll's `now` is
            try:
                page = next(listed, None)
            except ApiError as exc:
                log.warning("listing batches failed (%s); single GETs do the rest", exc)
                walk.stopped = "the list failed"
                return walk
            if page is None:
                walk.stopped = "the end of the list"
                return walk
            walk.pages += 1
            observed = _parsed(page)
            records = self.store.record_page(
                observed,
                now=started,
                owner=self.owner,
                policy=self.policy,
                lease_seconds=self.lease_seconds,
                u=self.random_unit,
                webhooks=self.webhooks(),
            )
            walk.records.extend(records)
            due = self.store.due(started, HORIZON)
            lean = lean + 1 if len(records) < MIN_YIELD else 0
            stop = _stop(due.soon, due.oldest, _created(observed), lean)
            if stop:
                walk.stopped = stop
                return walk
        walk.stopped = "the process is stopping"
        return walk


def _parsed(page: list[dict[str, Any]]) -> list[BatchObservation]:
    """The page's batches; one that does not parse is left to its own GET."""
    observed = []
    for item in page:
        try:
            observed.append(parse_batch(item))
        except (MalformedBatch, InvalidBatchId):
            continue
    return observed


def _created(observed: list[BatchObservation]) -> datetime | None:
    return observed[-1].timestamps.get("created_at") if observed else None


def _stop(soon: int, oldest: datetime | None, reached: datetime | None, lean: int) -> str:
    if soon == 0:
        return "nothing due soon is left"
    if oldest is not None and reached is not None and reached < oldest:
        return "past the oldest batch due"
    if lean >= 2:
        return "two lean pages"
    return ""

"""The reconciler: poll every tracked batch until it is terminal, then harvest its files.

One pass claims due batches (leases, so two reconcilers never work on one batch at
once), a page at first and then more as threads come free, polls them concurrently
in a thread pool, applies each answer through the state machine
(``PollStore.record_poll``), and for a terminal batch downloads its output and error
files (``FileIngest``). Failures on our side of the wire never fail a batch: they are
recorded and retried later.

``run_forever`` reads the clock once per iteration, waits with the stop event
(never a busy loop), and rides out a database outage: it backs off, gives back
any lease it still holds once the database answers again, and carries on.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta

from orchestrator.api.client import BatchApiClient
from orchestrator.api.errors import ApiAborted, ApiAuthError, ApiNotFoundError, RetryLater
from orchestrator.clock import Clock
from orchestrator.core.harvest import FileState, HarvestState
from orchestrator.core.observation import MalformedBatch, parse_batch
from orchestrator.core.poll_policy import PollPolicy
from orchestrator.db.database import Database
from orchestrator.db.list_polls import ListPollStore
from orchestrator.db.list_walks import ListWalkStore
from orchestrator.db.polls import Claim, PollRecord, PollStore
from orchestrator.db.results import LeaseLost, ResultStore
from orchestrator.errors import ApiError, DatabaseUnavailable, InvalidBatchId, describe
from orchestrator.metrics import Metrics
from orchestrator.probes import Heartbeat
from orchestrator.processes.config import ReconcilerConfig, poll_policy, reconciler_setup
from orchestrator.processes.ingest import FileIngest, IngestResult, IngestSettings
from orchestrator.processes.list_observation import HORIZON, ListObserver
from orchestrator.processes.loop import LoopProcess, Sleep, wait_on_stop
from orchestrator.processes.pass_summary import PassSummary
from orchestrator.processes.story import PeriodicSummary
from orchestrator.processes.upkeep import Upkeep
from orchestrator.processes.webhook_watch import WebhookWatch
from orchestrator.settings import Settings

__all__ = ["PassSummary", "Reconciler", "ReconcilerConfig", "poll_policy"]

log = logging.getLogger(__name__)

# A pass of a reconciler that runs until stopped claims for this long at the most: what
# a list walk observes reaches this far ahead (list_observation.HORIZON), so the next
# pass's walk comes before anything it did not observe has been due for long.
PASS_CLAIMS_SECONDS = HORIZON.total_seconds()

NOT_FOUND = "no such batch for this key (check the id, organization and project)"


class Reconciler(LoopProcess):
    name = "reconciler"

    def __init__(
        self,
        db: Database,
        client: BatchApiClient,
        config: Settings | ReconcilerConfig,
        clock: Clock,
        owner: str,
        *,
        policy: PollPolicy | None = None,
        random_unit: Callable[[], float] = random.random,
        stop: threading.Event | None = None,
        heartbeat: Heartbeat | None = None,
        sleep: Sleep = wait_on_stop,
        metrics: Metrics | None = None,
        upkeep: Upkeep | None = None,
    ) -> None:
        # Set stop: claimed work not yet started is released, harvests end at a checkpoint.
        super().__init__(
            clock, owner, random_unit=random_unit, stop=stop, heartbeat=heartbeat, sleep=sleep
        )
        self.db = db
        self.client = client
        self.config, self.policy = reconciler_setup(config, policy)
        self.polls = PollStore(db, stale_seconds=self.config.process_stale_seconds)
        self.webhooks = WebhookWatch(
            db, clock, self.config.webhook_silence_seconds, self.policy.max_seconds
        )
        self.results = ResultStore(db)
        self.metrics = metrics
        self.upkeep = upkeep  # file clean-up and pruning, between passes
        self._pool = ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="reconcile")
        self.story = PeriodicSummary(
            "reconciler",
            self.config.summary_seconds,
            since=clock.now(),
            backlog=self.polls.backlog,
            line=lambda c: (
                f"{c['done']} done ({c['lines']} result line(s)), {c['polled']} polled, "
                f"{c['errors']} error(s)"
            ),
        )
        listed = ListPollStore(self.polls)
        self.lister = ListObserver(
            client,
            listed,
            ListWalkStore(listed, stale_seconds=self.config.process_stale_seconds),
            clock=clock,
            owner=owner,
            policy=self.policy,
            lease_seconds=self.config.lease_seconds,
            min_tracked=self.config.list_min_tracked,
            concurrency=self.config.list_concurrency,
            random_unit=random_unit,
            webhooks=lambda: self.webhooks.flowing,
            on_page=self._between_pages,
            pause=self._wait_for_turn,
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Reconciler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def page_size(self) -> int:
        return self.config.page_size or self.config.concurrency * 4

    @property
    def busy(self) -> int:
        """Claims at work at which the pass waits before claiming more: a thread each
        (fewer if a page is smaller, so that there is always room to claim)."""
        return min(self.config.concurrency, self.page_size)

    @property
    def claims_per_thread(self) -> int:
        """Claims taken for each free thread: a page's share of a thread."""
        return max(1, self.page_size // self.busy)

    # --- the loops -------------------------------------------------------------------

    def run_once(self, *, claim_for: float | None = None) -> PassSummary:
        """One pass: claim and process every batch due now, a thread's worth of claims
        at a time once the first page is at work. ``claim_for``: claim for that many
        seconds at the most, and leave what is still due to the next pass."""
        summary = PassSummary(passes=1)
        seen: set[str] = set()
        self.webhooks.check()
        running: set[Future[None]] = set()  # claims at work (and the walk's harvests)
        again: list[str] = []  # due again within the pass: held till its end, for the next
        failure: BaseException | None = None
        try:
            # After a list walk, GET only what was due before it and it did not reach;
            # what fell due during it waits for the next walk.
            due_by = None
            if self.config.list_min_tracked > 0:
                due_by = self._observe_by_list(summary, running)
            claim_until = (
                None if claim_for is None else self.clock.now() + timedelta(seconds=claim_for)
            )
            while True:
                # Claim for the threads free as soon as one is, not once all that was
                # claimed is done: one long harvest must not hold back what is due behind
                # it. A few claims a free thread, as a page is a few a thread: no more, or
                # they would wait behind it with their leases running out.
                failure = self._wait_for(running, fewer_than=self.busy)
                if failure is not None or self.stop.is_set() or summary.auth_error is not None:
                    break
                self.heartbeat.beat()
                now = self.clock.now()  # once per claim: leases are measured from here
                if claim_until is not None and now >= claim_until and seen:
                    break  # the next pass walks the list again first (a claim made first)
                claims = self.polls.claim_due(
                    now=now,
                    owner=self.owner,
                    lease_seconds=self.config.lease_seconds,
                    limit=(self.busy - len(running)) * self.claims_per_thread,
                    due_by=due_by,
                )
                if not claims:
                    break
                fresh = [c for c in claims if c.batch_id not in seen]
                again += [c.batch_id for c in claims if c.batch_id in seen]
                seen.update(c.batch_id for c in fresh)
                summary.merge(PassSummary(claimed=len(fresh)))  # threads merge meanwhile
                running.update(self._pool.submit(self._process, c, summary) for c in fresh)
        finally:  # nothing begun in this pass is left at work when it ends, or raises
            ended = self._wait_for(running, fewer_than=1)
            if again:
                summary.released += self.polls.release(again, owner=self.owner)
        failure = failure or ended
        if failure is not None:
            raise failure
        self.story.tell_if_due(self.clock.now())
        return summary

    def run(self, stop: threading.Event | None = None, *, once: bool = False) -> PassSummary:
        """Pass after pass until ``stop`` is set (with ``once``: one pass and the upkeep
        that is due); returns the totals."""
        loop = self.process_loop(self.config, stop)
        if once:
            summary = self.run_once()
            if self.upkeep is not None:
                self.upkeep.run_due()
            return summary
        total = PassSummary.lifetime()  # its lists keep the most recent entries only

        def recovered(_failures: int) -> None:
            # Our earlier pass was cut short: free what it held, so nothing waits
            # out a lease that nobody is working under.
            total.released += self.polls.release_owned(owner=self.owner)

        def turn() -> float:
            # A pass that goes on claiming a backlog of harvests leaves the batches that
            # fall due meanwhile to the end: in flight, they would wait for all of it
            # (the list walk's cadence, and the claims' due-by, are per pass).
            summary = self.run_once(claim_for=PASS_CLAIMS_SECONDS)
            if self.upkeep is not None:
                self.upkeep.run_due()
            total.merge(summary)
            if summary.auth_error is not None:
                return self.policy.error_max_seconds
            return 0.0 if summary.claimed else self.config.idle_seconds

        try:
            loop.run(turn, on_recovered=recovered)
        finally:
            total.db_outages += loop.outages
        total.stopped = True
        return total

    def run_forever(self, stop: threading.Event | None = None) -> PassSummary:
        """Pass after pass until ``stop`` is set; returns the totals."""
        return self.run(stop)

    def check_attention(self, summary: PassSummary) -> PassSummary:
        summary.attention = self.polls.attention()
        return summary

    def _between_pages(self) -> bool:
        self.heartbeat.beat()  # a long walk is not a stalled loop
        return not self.stop.is_set()

    def _wait_for_turn(self, seconds: float) -> bool:
        self.sleep(self.stop, seconds)  # injected: tests do not wait
        return not self.stop.is_set()

    def _observe_by_list(self, summary: PassSummary, running: set[Future[None]]) -> datetime | None:
        """Observe in-flight batches a list page at a time (list_observation.py) and
        start harvesting what it found ended (added to ``running``); when it walked,
        the moment it began."""
        walk = self.lister.walk()
        log.debug(
            "list walk: %d page(s), %d observed; %s", walk.pages, len(walk.records), walk.stopped
        )
        summary.list_pages += walk.pages
        for record in walk.records:
            summary.merge(_found(record))
        # A page of the harvests it found begins now (leased: no claim takes them
        # meanwhile); the rest are given back, due since the walk began, for the claims
        # to take in turn with what fell due before them. Each held its lease queued
        # behind all the others, and a walk that found thousands ended saw most of them
        # run out (another reconciler took them over) while the pass claimed nothing.
        ended = [r for r in walk.records if r.harvest]
        first, later = ended[: self.page_size], ended[self.page_size :]
        if later:  # not counted as released: they are not work given back at a stop
            due_at = walk.started or self.clock.now()
            self.polls.release_due([r.batch_id for r in later], owner=self.owner, due_at=due_at)
        running.update(
            self._pool.submit(self._harvest, r.batch_id, r.file_ids, summary) for r in first
        )
        return walk.started

    # --- the claims at work -----------------------------------------------------------

    @staticmethod
    def _wait_for(running: set[Future[None]], *, fewer_than: int) -> BaseException | None:
        """Wait until fewer than ``fewer_than`` claims are at work, taking the ended out
        of ``running``. If one raised (an outage; a walk's harvest that failed
        unforeseen), wait for every other to end (nothing more is claimed then) and
        return the first exception, for the pass to raise."""
        failure: BaseException | None = None
        while running and (len(running) >= fewer_than or failure is not None):
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            running.difference_update(done)
            for future in done:
                failure = failure or future.exception()
        return failure

    def _process(self, claim: Claim, summary: PassSummary) -> None:
        """Poll (when needed) and harvest one leased batch. Whatever goes wrong with
        it is recorded on it and backed off; the pass goes on with the others."""
        try:
            self._process_claim(claim, summary)
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            log.exception("handling the batch failed", extra={"batch_id": claim.batch_id})
            error = f"unexpected error while handling this batch: {describe(exc)}"
            summary.merge(PassSummary(poll_failures=1, errors=[f"{claim.batch_id}: {error}"]))
            try:
                self._failed(claim.batch_id, error, event="unexpected_error")
            except DatabaseUnavailable:
                raise
            except Exception:  # its lease runs out; it is tried again then
                log.exception("could not record it either", extra={"batch_id": claim.batch_id})

    def _process_claim(self, claim: Claim, summary: PassSummary) -> None:
        if self.stop.is_set() or summary.auth_error is not None:
            summary.merge(
                PassSummary(released=self.polls.release([claim.batch_id], owner=self.owner))
            )
            return
        files = claim.file_ids
        terminal = claim.status is not None and claim.status.is_terminal
        if not terminal or self.policy.awaiting_file_ids(
            claim.status,
            output_file_id=claim.output_file_id,
            error_file_id=claim.error_file_id,
            terminal_polls=claim.terminal_polls,
        ):
            record = self._poll(claim, summary)
            if record is None or not record.harvest:
                return
            files = record.file_ids
        # else: terminal with known files; a harvest to start, resume or retry
        self._harvest(claim.batch_id, files, summary)

    def _poll(self, claim: Claim, summary: PassSummary) -> PollRecord | None:
        batch_id = claim.batch_id
        now = self.clock.now()
        try:
            answer = self.client.retrieve(batch_id)
            observed = parse_batch(answer.data, expected_id=batch_id)
        except ApiAborted:  # stopping: not a failure of the batch's, give it back
            summary.merge(PassSummary(released=self.polls.release([batch_id], owner=self.owner)))
            return None
        except ApiAuthError as exc:
            summary.merge(PassSummary(poll_failures=1, auth_error=str(exc)))
            self._failed(batch_id, f"authentication refused: {exc}")
            return None
        except (ApiError, MalformedBatch, InvalidBatchId) as exc:
            summary.merge(PassSummary(poll_failures=1))
            retry_after = exc.delay_s if isinstance(exc, RetryLater) else None
            not_found = isinstance(exc, ApiNotFoundError)
            text = f"{exc}; {NOT_FOUND}" if not_found else str(exc)
            event = "anomaly" if isinstance(exc, MalformedBatch) else None
            if self._failed(batch_id, text, retry_after, not_found=not_found, event=event):
                summary.merge(PassSummary(unknown=[batch_id]))
            return None
        record = self.polls.record_poll(
            observed,
            now=now,
            owner=self.owner,
            policy=self.policy,
            lease_seconds=self.config.lease_seconds,
            u=self.random_unit(),
            webhooks=self.webhooks.flowing,
        )
        if record is None:  # forgotten while the GET was in flight: nothing to follow
            return None
        summary.merge(_found(record))
        self.story.add(polled=1)
        return record

    def _failed(
        self,
        batch_id: str,
        error: str,
        retry_after: float | None = None,
        *,
        not_found: bool = False,
        event: str | None = None,
    ) -> bool:
        """Record a failed poll; True when the batch is let go (see PollPolicy.gives_up).
        With `event`, the failure is also an event of that kind, every time."""
        log.warning("poll failed: %s", error, extra={"batch_id": batch_id})
        self.story.add(errors=1)
        stopped = self.polls.record_failure(
            batch_id,
            now=self.clock.now(),
            owner=self.owner,
            error=error,
            policy=self.policy,
            u=self.random_unit(),
            retry_after=retry_after,
            not_found=not_found,
            event=event,
        )
        if stopped:
            log.warning(
                "stopped polling: the API has never shown this batch and keeps answering "
                "404 (a mistyped id, or another organization's or project's batch)",
                extra={"batch_id": batch_id, "action": "poll_stopped"},
            )
        return stopped

    def _harvest(self, batch_id: str, files: list[tuple[str, str]], summary: PassSummary) -> None:
        ingest = FileIngest(
            client=self.client,
            results=self.results,
            clock=self.clock,
            owner=self.owner,
            settings=IngestSettings(
                chunk_lines=self.config.chunk_lines,
                download_attempts=self.config.download_attempts,
                lease_seconds=self.config.lease_seconds,
                read_bytes=self.config.read_bytes,
                max_line_bytes=self.config.max_line_bytes,
            ),
            stop=self.stop,
            on_progress=self.heartbeat.beat,
        )
        found = PassSummary()
        started = self.clock.now()
        try:
            for kind, file_id in files:
                outcome = ingest.run(batch_id=batch_id, file_id=file_id, kind=kind)
                _count_file(found, batch_id, outcome)
                if self.metrics is not None:
                    self.metrics.observe_ingested(
                        kind, results=outcome.inserted, bytes_read=outcome.bytes_read
                    )
                if outcome.stopped:
                    found.released += self.polls.release([batch_id], owner=self.owner)
                    summary.merge(found)
                    return
        except LeaseLost as exc:
            log.warning("%s", exc, extra={"batch_id": batch_id})
            found.lost_leases += 1
            summary.merge(found)
            return
        except ApiAuthError as exc:
            found.auth_error = str(exc)
            self._failed(batch_id, f"authentication refused: {exc}")
            summary.merge(found)
            return
        record = self.polls.finish_harvest(
            batch_id,
            now=self.clock.now(),
            owner=self.owner,
            policy=self.policy,
            u=self.random_unit(),
        )
        if record is None:
            found.lost_leases += 1
        elif record.state in (HarvestState.DONE, HarvestState.MISSING):
            found.harvested += 1
            seconds = (self.clock.now() - started).total_seconds()
            self.story.add(done=1, lines=record.results_stored)
            log.info(
                "harvest done: %d result line(s), %d unreadable, from %d file(s) in %.1fs",
                record.results_stored,
                record.line_errors,
                len(files),
                seconds,
                extra={"batch_id": batch_id, "action": "harvested", "seconds": seconds},
            )
        summary.merge(found)


def _found(record: PollRecord) -> PassSummary:
    """What one observation, a GET's or a list page's, adds to the pass."""
    batch_id = record.batch_id
    if record.cancel_closed:
        extra = {"batch_id": batch_id, "action": "cancel_settled"}
        log.info("cancel settled: %s", record.cancel_closed, extra=extra)
    if record.newly_overdue:
        log.warning("batch is overdue in %s", record.status, extra={"batch_id": batch_id})
    return PassSummary(
        polled=1,
        became_terminal=int(record.became_terminal),
        newly_overdue=[batch_id] if record.newly_overdue else [],
        cancels_closed={batch_id: record.cancel_closed} if record.cancel_closed else {},
        anomalies=[f"{batch_id}: {a}" for a in record.anomalies],
    )


def _count_file(found: PassSummary, batch_id: str, outcome: IngestResult) -> None:
    found.results_stored += outcome.inserted
    found.duplicates += outcome.duplicates
    found.line_errors += outcome.malformed
    label = f"{batch_id}/{outcome.kind} {outcome.file_id}"
    if outcome.shared_with:
        found.anomalies.append(f"{label}: also named by {', '.join(outcome.shared_with)}")
    if outcome.state is FileState.DONE:
        found.files_done += 1
    elif outcome.state is FileState.MISSING:
        found.files_missing.append(f"{label}: {outcome.error}")
    elif not outcome.stopped:
        found.files_failed.append(f"{label}: {outcome.error}")

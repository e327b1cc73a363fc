"""The simulator's webhook sender: signed ``batch.*`` events for terminal transitions.

Like OpenAI's (reference, section 2.3): one event per batch that ends, a JSON body
``{id, object: "event", type, created_at, data: {id}}``, Standard Webhooks headers
signed with the configured ``whsec_`` secret, and delivery again (freshly signed,
after a growing delay, a bounded number of times) until a URL answers 2xx.

A batch's status is computed from the clock, never stored, so the sender keeps a
queue of moments to look: when a batch is created (its natural end) and when a
cancel is accepted (the end of its cancelling). At each moment it asks the
simulator whether the batch is terminal and not yet announced.

Faults use the simulator's fault rules with ``endpoint: "webhook"``; each event
draws one rule (see docs/simulator.md): ``bad_signature``, ``duplicate``,
``late``, ``unknown_batch``, ``drop`` (redelivered after ``delay_s``), ``lose``
(never delivered), ``reorder`` (held back so later events overtake it) and
``forge`` (an extra event signed with a wrong key, claiming another status).

``pump()`` does everything due now on the caller's thread (tests with a manual
clock); ``start()`` runs it in a thread for a real server.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx

from orchestrator.clock import Clock
from orchestrator.core.webhooks import parse_secrets, sign

from .faults import FaultRule

__all__ = ["Delivery", "WebhookSender"]

# Defaults for a rule whose delay_s is 0, in real seconds.
DEFAULT_DELAYS = {"late": 10.0, "drop": 5.0, "reorder": 1.0}
WRONG_KEY = b"not the secret the receiver knows"
OTHER_STATUS = {"completed": "cancelled", "cancelled": "completed", "expired": "completed"}


@dataclass(frozen=True)
class Delivery:
    url: str
    webhook_id: str
    body: bytes
    signed_at: int  # the webhook-timestamp, unless re-signed on a retry
    attempt: int = 1
    key: bytes | None = None  # None: the configured secret; else a wrong one (forged)
    retry: bool = True  # forged and fault-made deliveries are sent once


@dataclass(order=True)
class _Item:
    due: float
    seq: int
    batch_id: str | None = None  # look whether this batch has ended
    delivery: Delivery | None = None  # or send this


EventSource = Callable[[str], "tuple[str, float] | float | None"]


class WebhookSender:
    def __init__(
        self,
        urls: tuple[str, ...],
        secret: str,
        clock: Clock,
        *,
        attempts: int = 8,
        retry_s: float = 1.0,
        timeout_s: float = 5.0,
        seed: int | None = None,
    ) -> None:
        keys = parse_secrets(secret)
        if not urls or not keys:
            raise ValueError("webhooks need at least one URL and a whsec_ secret")
        self.urls = urls
        self.key = keys[0]
        self.clock = clock
        self.attempts = attempts
        self.retry_s = retry_s
        self._rng = random.Random(seed)
        self._queue: list[_Item] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # A new connection per delivery, as a sender on the internet would use: no stale
        # keep-alive connection the receiver already closed.
        self._http = httpx.Client(
            timeout=timeout_s, limits=httpx.Limits(max_keepalive_connections=0)
        )
        self.stats: Counter[str] = Counter()
        # Set by the simulator: (batch id) -> (terminal status, when) if it has ended
        # and was not announced yet (it is marked announced), else when to look again
        # (a float), or None (nothing to announce, ever).
        self.source: EventSource = lambda _batch_id: None
        # Set by the simulator: (batch id) -> the fault rule this event draws, if any.
        self.fault: Callable[[str], FaultRule | None] = lambda _batch_id: None

    # --- scheduling ------------------------------------------------------------------

    def watch(self, batch_id: str, at: float) -> None:
        """Look at ``at`` (unix seconds) whether the batch has ended."""
        self._push(_Item(at, next(self._seq), batch_id=batch_id))

    def _push(self, item: _Item) -> None:
        with self._lock:
            heapq.heappush(self._queue, item)
        self._wake.set()

    def _due(self, now: float) -> list[_Item]:
        with self._lock:
            items = []
            while self._queue and self._queue[0].due <= now:
                items.append(heapq.heappop(self._queue))
            return items

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    # --- running ---------------------------------------------------------------------

    def pump(self) -> int:
        """Do everything due now (and what that makes due now); return deliveries sent."""
        sent = 0
        for _ in range(100_000):  # bounded: each round takes items off the queue
            items = self._due(self.clock.now().timestamp())
            if not items:
                break
            for item in items:
                sent += self._run(item)
        return sent

    def start(self) -> WebhookSender:
        self._thread = threading.Thread(target=self._loop, name="sim-webhooks", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._http.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.pump()
            with self._lock:
                wait = self._queue[0].due - self.clock.now().timestamp() if self._queue else 1.0
            self._wake.clear()
            self._wake.wait(min(max(wait, 0.005), 1.0))

    # --- one item --------------------------------------------------------------------

    def _run(self, item: _Item) -> int:
        if item.delivery is not None:
            return self._send(item.delivery)
        assert item.batch_id is not None
        found = self.source(item.batch_id)
        if found is None:
            return 0
        if isinstance(found, float):
            self.watch(item.batch_id, found)  # not ended yet (a cancel moved its end)
            return 0
        status, ended_at = found
        self._announce(item.batch_id, status, ended_at)
        return 0

    def _announce(self, batch_id: str, status: str, ended_at: float) -> None:
        now = self.clock.now().timestamp()
        rule = self.fault(batch_id)
        kind = rule.kind if rule is not None else None
        if kind is not None:
            self.stats[f"fault_{kind}"] += 1
        delay = (rule.delay_s or DEFAULT_DELAYS.get(kind or "", 0.0)) if rule else 0.0
        for url in self.urls:
            genuine = self._delivery(url, batch_id, status, ended_at, now)
            if kind == "lose":
                continue
            if kind == "forge":
                lie = OTHER_STATUS.get(status, "completed")
                forged = self._delivery(url, batch_id, lie, ended_at, now)
                self._queue_delivery(replace(forged, key=WRONG_KEY, retry=False), now)
            if kind == "unknown_batch":
                stranger = f"batch_{self._rng.getrandbits(96):024x}"
                self._queue_delivery(
                    replace(self._delivery(url, stranger, status, ended_at, now), retry=False),
                    now,
                )
            if kind == "bad_signature":
                # the first attempt fails verification; the retry is signed properly
                self._queue_delivery(replace(genuine, key=WRONG_KEY, retry=False), now)
                self._queue_delivery(replace(genuine, attempt=2), now + self.retry_s)
                continue
            if kind == "duplicate":
                self._queue_delivery(replace(genuine, retry=False), now)
            when = now + delay if kind in ("late", "drop", "reorder") else now
            self._queue_delivery(genuine, when)

    def _delivery(
        self, url: str, batch_id: str, status: str, ended_at: float, now: float
    ) -> Delivery:
        event_id = f"evt_{self._rng.getrandbits(96):024x}"
        body = json.dumps(
            {
                "id": event_id,
                "object": "event",
                "type": f"batch.{status}",
                "created_at": int(ended_at),
                "data": {"id": batch_id},
            }
        ).encode()
        return Delivery(url=url, webhook_id=f"msg_{event_id[4:]}", body=body, signed_at=int(now))

    def _queue_delivery(self, delivery: Delivery, when: float) -> None:
        self._push(_Item(when, next(self._seq), delivery=delivery))

    def _send(self, delivery: Delivery) -> int:
        key = delivery.key or self.key
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(delivery.signed_at),
            "webhook-signature": sign(key, delivery.webhook_id, delivery.signed_at, delivery.body),
        }
        self.stats["sent"] += 1
        try:
            answer = self._http.post(delivery.url, content=delivery.body, headers=headers)
            ok = 200 <= answer.status_code < 300
            self.stats["acknowledged" if ok else f"refused_{answer.status_code}"] += 1
        except httpx.HTTPError as exc:
            ok = False
            self.stats[f"unreachable_{type(exc).__name__}"] += 1
        if ok and delivery.key is not None:
            self.stats["forged_acknowledged"] += 1  # a receiver that accepted a bad signature
        if not ok and delivery.retry and delivery.attempt < self.attempts:
            now = self.clock.now().timestamp()
            again = replace(delivery, attempt=delivery.attempt + 1, signed_at=int(now))
            self._queue_delivery(again, now + self.retry_s * 2 ** (delivery.attempt - 1))
        return 1

    def snapshot(self) -> dict[str, Any]:
        return {**self.stats, "queued": self.pending()}

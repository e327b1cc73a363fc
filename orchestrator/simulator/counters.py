"""What the simulator served: requests, injected faults, concurrent cancels."""

from __future__ import annotations

from collections import Counter
from typing import Any


class Counters:
    """Plain counters; the simulator's lock guards every call."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.faults: Counter[str] = Counter()
        self.cancels_applied = 0
        self.cancels_in_flight: Counter[str] = Counter()
        self.max_concurrent_cancels: dict[str, int] = {}
        self.total_in_flight = 0
        self.max_total_in_flight = 0

    def request(self, endpoint: str, key: str | None) -> None:
        self.requests[(endpoint, key or "")] += 1

    def cancel_started(self, batch_id: str) -> None:
        self.cancels_in_flight[batch_id] += 1
        now = self.cancels_in_flight[batch_id]
        if now > self.max_concurrent_cancels.get(batch_id, 0):
            self.max_concurrent_cancels[batch_id] = now
        self.total_in_flight += 1
        self.max_total_in_flight = max(self.max_total_in_flight, self.total_in_flight)

    def cancel_finished(self, batch_id: str) -> None:
        if batch_id not in self.cancels_in_flight:  # counters were reset meanwhile
            return
        self.cancels_in_flight[batch_id] -= 1
        if self.cancels_in_flight[batch_id] <= 0:
            del self.cancels_in_flight[batch_id]
        self.total_in_flight -= 1

    def served(self, endpoint: str, key: str | None = None) -> int:
        if key is not None:
            return self.requests[(endpoint, key)]
        return sum(n for (name, _), n in self.requests.items() if name == endpoint)

    def snapshot(self) -> dict[str, Any]:
        by_key: dict[str, dict[str, int]] = {}
        totals: Counter[str] = Counter()
        for (endpoint, key), count in sorted(self.requests.items()):
            by_key.setdefault(endpoint, {})[key] = count
            totals[endpoint] += count
        return {
            "requests": by_key,
            "requests_total": dict(totals),
            "faults": dict(self.faults),
            "faults_total": sum(self.faults.values()),
            "cancels_applied": self.cancels_applied,
            "cancels_in_flight": dict(self.cancels_in_flight),
            "max_concurrent_cancels": dict(self.max_concurrent_cancels),
            "max_concurrent_cancels_any_batch": max(
                self.max_concurrent_cancels.values(), default=0
            ),
            "max_concurrent_cancels_total": self.max_total_in_flight,
        }

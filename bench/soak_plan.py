"""What the soak throws at the orchestrator: the batch mix, the faults, the process settings.

Everything here is data. Durations are scenario seconds (the simulator divides them
by its time scale); the mix covers every way a batch can end and every way the API
can misbehave that the orchestrator claims to survive.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

# Every batch runs on this unless its kind overrides a field. With the time scale of
# 30 the long run uses, a batch validates for 1 s, runs for 2 min, finalizes for 2 s
# and takes 4 s to cancel: short enough to finish in minutes, long enough that most
# cancels land while the batch is still running even when recording thousands of
# them takes the CLI a minute on a busy machine.
BASE_SCENARIO: dict[str, Any] = {
    "validating_s": 30,
    "running_s": 3600,
    "finalizing_s": 60,
    "cancelling_s": 120,
    "failed_request_ratio": 0.1,
    "body_bytes": 120,  # small rows: the soak is about correctness, not bytes
}


@dataclass(frozen=True)
class Kind:
    """One kind of batch in the mix."""

    name: str
    weight: float
    scenario: dict[str, Any] = field(default_factory=dict)
    # How far into its life it is when created: at most a third of the way through its
    # run, so that most cancels land while it is still running, even on a busy machine.
    age_s: tuple[float, float] = (60.0, 1200.0)
    cancel: bool = True  # we ask to cancel it (else we only track and harvest it)
    cancel_after_s: float | None = None  # someone else cancelled it this long after creation


KINDS: tuple[Kind, ...] = (
    Kind("in_progress", 36),
    Kind("loses_race", 8, {"cancel_outcome": "completed"}),
    Kind("ids_late", 7, {"file_ids_lag_polls": 2}),
    Kind("validating", 6, {"validating_s": 1200}, age_s=(0, 600)),
    Kind("finalizing", 4, {"finalizing_s": 1800}, age_s=(3640, 3900)),
    Kind("long_cancelling", 4, {"cancelling_s": 1200}),
    Kind("cancel_expires", 1, {"cancel_outcome": "expired"}),
    Kind("cancel_fails", 1, {"cancel_outcome": "failed"}),
    Kind("already_cancelling", 3, {"cancelling_s": 1800}, age_s=(500, 700), cancel_after_s=300),
    Kind("already_cancelled", 2, age_s=(1000, 2000), cancel_after_s=300),
    Kind("completed", 5, age_s=(3800, 20000)),
    Kind("expired", 4, {"running_s": 100000}, age_s=(86500, 90000)),
    Kind("failed", 3, {"fail_validation": True}, age_s=(60, 600)),
    Kind("tracked", 13, age_s=(60, 3000), cancel=False),
    # No failed request, never cancelled: completes with error_file_id "" (not null).
    Kind(
        "empty_error_id",
        2,
        {"failed_request_ratio": 0.0, "empty_string_error_file": True},
        age_s=(2000, 3400),
        cancel=False,
    ),
)


@dataclass(frozen=True)
class PlannedBatch:
    kind: str
    requests: int
    body: dict[str, Any]  # the POST /_sim/batches body
    cancel: bool


def plan_batches(
    count: int, rng: random.Random, *, min_requests: int, max_requests: int
) -> list[PlannedBatch]:
    """``count`` batches drawn from the mix; request counts log-uniform in the range."""
    weights = [k.weight for k in KINDS]
    planned: list[PlannedBatch] = []
    for kind in rng.choices(KINDS, weights=weights, k=count):
        # Log-uniform: many small batches, a long tail of large ones, like real traffic.
        requests = round(math.exp(rng.uniform(math.log(min_requests), math.log(max_requests))))
        body: dict[str, Any] = {
            "requests": requests,
            "scenario": {**BASE_SCENARIO, **kind.scenario},
            "age_s": rng.uniform(*kind.age_s),
            "metadata": {"soak_kind": kind.name},
        }
        if kind.cancel_after_s is not None:
            body["cancel_after_s"] = kind.cancel_after_s
        planned.append(PlannedBatch(kind.name, requests, body, kind.cancel))
    return planned


# A few lines that are not batch ids, mixed into the first cancel wave: the CLI must
# report them, exit 1 and still record every good id.
BAD_IDS: tuple[str, ...] = ("not a batch id!", "batch_../../etc/passwd", "x" * 200)


def fault_rules(rate: float) -> list[dict[str, Any]]:
    """The fault rules, each firing on a share of matching requests (scaled by ``rate``).

    Rules are tried in order and the first that fires wins, so the shares are a little
    lower than written. Server-side ``slow`` stays far below the client's read timeout:
    a timed-out cancel that is retried while the first is still being served would
    legitimately overlap and blur the "never two cancels at once" check.
    """

    def p(share: float) -> float:
        return min(1.0, share * rate)

    rules: list[dict[str, Any]] = [
        {"kind": "status", "status": 500, "probability": p(0.05)},
        {"kind": "status", "status": 503, "probability": p(0.05)},
        {"kind": "status", "status": 429, "retry_after": "1", "probability": p(0.03)},
        {"kind": "status", "status": 429, "retry_after_ms": "300", "probability": p(0.02)},
        {"kind": "drop_before", "probability": p(0.01)},
        {"kind": "drop_mid", "probability": p(0.01)},
        {"kind": "truncate", "endpoint": "content", "probability": p(0.02)},
        {"kind": "html", "status": 502, "probability": p(0.01)},
        {"kind": "slow", "endpoint": "cancel", "delay_s": 0.3, "probability": p(0.02)},
    ]
    return [r for r in rules if r["probability"] > 0]


@dataclass(frozen=True)
class ProcessSettings:
    """Tight settings so a killed process's work is picked up within seconds."""

    worker_concurrency: int = 8
    worker_lease_seconds: float = 5.0
    reconcile_concurrency: int = 6
    reconcile_lease_seconds: float = 10.0
    poll_initial_seconds: float = 2.0
    poll_max_seconds: float = 6.0
    chunk_lines: int = 50  # several chunks per file: kills land between checkpoints
    default_leases: bool = False  # True: the product's lease settings, not the tight ones
    budget: float | None = None  # api_max_requests_per_second, shared by every process
    list_min_tracked: int | None = None  # reconcile_list_min_tracked (None: the default, 50)

    def env(self, role: str) -> dict[str, str]:
        """ORCHESTRATOR_* variables for a ``worker`` or ``reconcile`` process."""
        common = {
            "ORCHESTRATOR_LOG_LEVEL": "WARNING",
            "ORCHESTRATOR_API_CONNECT_TIMEOUT": "5",
            "ORCHESTRATOR_API_READ_TIMEOUT": "10",
            "ORCHESTRATOR_RETRY_INITIAL_DELAY": "0.1",
            "ORCHESTRATOR_RETRY_MAX_DELAY": "1",
            "ORCHESTRATOR_RETRY_IN_PROCESS_ATTEMPTS": "3",
            "ORCHESTRATOR_RETRY_MAX_IN_PROCESS_WAIT": "2",
            "ORCHESTRATOR_RETRY_DURABLE_INITIAL": "0.5",
            "ORCHESTRATOR_RETRY_DURABLE_MAX": "5",
        }
        if self.budget is not None:
            common["ORCHESTRATOR_API_MAX_REQUESTS_PER_SECOND"] = str(self.budget)
        if role == "worker":
            return {
                **common,
                # Only the loop thread talks to the database.
                "ORCHESTRATOR_DATABASE_POOL_SIZE": "2",
                "ORCHESTRATOR_WORKER_CONCURRENCY": str(self.worker_concurrency),
                "ORCHESTRATOR_WORKER_IDLE_SECONDS": "0.2",
                **self._leases(role),
            }
        return {
            **common,
            "ORCHESTRATOR_DATABASE_POOL_SIZE": str(self.reconcile_concurrency),
            "ORCHESTRATOR_RECONCILE_CONCURRENCY": str(self.reconcile_concurrency),
            "ORCHESTRATOR_RECONCILE_IDLE_SECONDS": "0.2",
            **self._leases(role),
            "ORCHESTRATOR_POLL_INITIAL_SECONDS": str(self.poll_initial_seconds),
            "ORCHESTRATOR_POLL_MAX_SECONDS": str(self.poll_max_seconds),
            "ORCHESTRATOR_POLL_CANCELLING_MAX_SECONDS": str(self.poll_initial_seconds),
            "ORCHESTRATOR_POLL_ERROR_MAX_SECONDS": str(self.poll_max_seconds),
            "ORCHESTRATOR_INGEST_CHUNK_LINES": str(self.chunk_lines),
            **self._lists(),
        }

    def _lists(self) -> dict[str, str]:
        if self.list_min_tracked is None:
            return {}
        return {"ORCHESTRATOR_RECONCILE_LIST_MIN_TRACKED": str(self.list_min_tracked)}

    def _leases(self, role: str) -> dict[str, str]:
        if self.default_leases:
            return {}
        if role == "worker":
            return {
                "ORCHESTRATOR_WORKER_LEASE_SECONDS": str(self.worker_lease_seconds),
                "ORCHESTRATOR_WORKER_HEARTBEAT_SECONDS": str(self.worker_lease_seconds / 5),
            }
        return {"ORCHESTRATOR_RECONCILE_LEASE_SECONDS": str(self.reconcile_lease_seconds)}

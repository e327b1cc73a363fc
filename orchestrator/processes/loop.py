"""The skeleton every long-running process turns in: one turn, then a wait, until stopped.

A process (the cancel worker, the reconciler) gives ``ProcessLoop.run`` one
function, its *turn*: claim what is due, dispatch it, record what finished,
heartbeat its leases. The turn says how long to wait before the next one (0: at
once; ``None``: there is nothing more to do, for ``--once``). The loop owns what
every process must do the same way, so a fix to it lands once:

- the heartbeat (``/healthz``): a beat every turn, and before a deliberate wait
  a beat that says how long the wait is, so a waiting process stays healthy;
- a database outage (``DatabaseUnavailable`` out of a turn): counted, logged,
  and waited out with a capped exponential backoff (``outage_backoff``: a
  database down for days is thousands of failures in a row, never an overflow);
  when a turn goes through again the process is told (``on_recovered``);
- a clean stop: the stop event (set by SIGTERM/SIGINT, see ``stopping``) ends
  every wait at once and ends the loop before the next turn;
- waiting through an injected ``sleep``, so tests ride out long outages with no
  real waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.clock import Clock
from orchestrator.core.retry_policy import outage_backoff
from orchestrator.errors import DatabaseUnavailable
from orchestrator.probes import Heartbeat

__all__ = ["LoopConfig", "LoopProcess", "ProcessLoop", "Sleep", "wait_on_stop"]

log = logging.getLogger(__name__)

Sleep = Callable[[threading.Event, float], object]
"""How a loop waits: ``sleep(stop, seconds)``, ending early when ``stop`` is set."""


def wait_on_stop(stop: threading.Event, seconds: float) -> None:
    stop.wait(seconds)


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """What every process loop needs; each process's config extends it."""

    idle_seconds: float = 1.0  # nothing to do: wait this long before looking again
    db_retry_initial_seconds: float = 0.5  # after a database failure, doubling ...
    db_retry_max_seconds: float = 30.0  # ... up to this
    summary_seconds: float = 60.0  # a one-line summary at INFO this often (0: never)


@dataclass(kw_only=True)
class ProcessLoop:
    name: str  # in the log lines
    config: LoopConfig
    stop: threading.Event
    heartbeat: Heartbeat
    sleep: Sleep = wait_on_stop
    outage_note: str = ""  # what the operator should know while the database is down
    outages: int = 0  # database failures ridden out, in all

    def run(
        self,
        turn: Callable[[], float | None],
        *,
        on_recovered: Callable[[int], None] | None = None,
    ) -> None:
        """Turn until the stop event is set or a turn returns ``None``.

        ``on_recovered(failures)`` runs before each turn that follows a database failure
        (to give back what the cut-short turn held); failing there is one more failure."""
        failures = 0  # in a row
        while not self.stop.is_set():
            self.heartbeat.beat()
            try:
                if failures and on_recovered is not None:
                    on_recovered(failures)
                pause = turn()
            except DatabaseUnavailable as exc:
                failures += 1
                self.outages += 1
                pause = self.outage_pause(failures)
                log.warning(
                    "%s; retrying in %.1fs%s",
                    exc,
                    pause,
                    f"; {self.outage_note}" if self.outage_note else "",
                    extra={"action": "db_unavailable"},
                )
            else:
                if failures:
                    log.info(
                        "%s: the database is back after %d failed attempt(s)",
                        self.name,
                        failures,
                        extra={"action": "db_back"},
                    )
                failures = 0
            if pause is None:
                return
            if pause > 0:
                self.wait(pause)

    def outage_pause(self, failures: int) -> float:
        return outage_backoff(
            failures,
            initial=self.config.db_retry_initial_seconds,
            cap=self.config.db_retry_max_seconds,
        )

    def wait(self, seconds: float) -> None:
        """Wait on purpose (ended early by the stop event); not a stall for ``/healthz``."""
        self.heartbeat.beat(busy_for=seconds)
        self.sleep(self.stop, seconds)


class LoopProcess:
    """What every long-running process is given, and keeps, the same way: its clock,
    its owner name (on the leases it takes), its random unit (for backoff jitter),
    its stop event, its heartbeat and how it waits."""

    name = "process"

    def __init__(
        self,
        clock: Clock,
        owner: str,
        *,
        random_unit: Callable[[], float],
        stop: threading.Event | None,
        heartbeat: Heartbeat | None,
        sleep: Sleep,
    ) -> None:
        self.clock = clock
        self.owner = owner
        self.random_unit = random_unit
        self.stop = stop or threading.Event()  # set it (SIGTERM does) to stop cleanly
        self.heartbeat = heartbeat or Heartbeat(clock)  # /healthz: the loop still turns
        self.sleep = sleep

    def process_loop(
        self, config: LoopConfig, stop: threading.Event | None, *, outage_note: str = ""
    ) -> ProcessLoop:
        """The loop for one run; a ``stop`` given here replaces the process's stop event."""
        if stop is not None:
            self.stop = stop
        return ProcessLoop(
            name=self.name,
            config=config,
            stop=self.stop,
            heartbeat=self.heartbeat,
            sleep=self.sleep,
            outage_note=outage_note,
        )

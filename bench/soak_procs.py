"""The soak's process pool: `orchestrator worker` and `orchestrator reconcile` subprocesses.

Each slot always has one live process. ``kill_random`` SIGKILLs one (no clean-up
of any kind runs: leases stay held, transactions are cut) and starts a fresh one
in its place, as a process manager would. A process that exits without being
killed is a failure of the product: it is recorded with the tail of its log and
replaced, so the run goes on and the report names it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROLES = ("worker", "reconcile", "webhooks")
_LOG_TAIL_CHARS = 1500
# A process installs its SIGTERM handler after its imports and settings, which take a
# few seconds on a busy machine. A SIGTERM before that ends it at once (exit -15): it
# had nothing in hand, so that is a clean stop too, for a process this young.
STARTUP_GRACE_S = 15.0


@dataclass
class Slot:
    role: str
    index: int
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    generation: int = 0
    started: float = 0.0  # time.monotonic() at spawn

    @property
    def label(self) -> str:
        return f"{self.role}-{self.index}"


@dataclass
class Supervisor:
    env: Mapping[str, Mapping[str, str]]  # role -> the full environment of its processes
    log_dir: Path
    workers: int
    reconcilers: int
    rng: random.Random
    receivers: int = 0  # `orchestrator webhooks` processes (the soak's --webhooks)
    slots: list[Slot] = field(default_factory=list)
    kills: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROLES, 0))
    unexpected: list[str] = field(default_factory=list)
    exit_codes: dict[str, int] = field(default_factory=dict)
    # slot label ("worker-0") -> variables added to its role's, e.g. a shifted clock
    slot_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        counts = {"worker": self.workers, "reconcile": self.reconcilers, "webhooks": self.receivers}
        self.slots = [Slot(role, i) for role in ROLES for i in range(counts[role])]
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: Slot) -> None:
        slot.generation += 1
        slot.started = time.monotonic()
        slot.log = self.log_dir / f"{slot.label}.{slot.generation}.log"
        with slot.log.open("wb") as stderr:
            slot.process = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", slot.role],
                env={**self.env[slot.role], **self.slot_env.get(slot.label, {})},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def kill_random(self) -> str:
        """SIGKILL one live process at random and start its replacement; returns its label."""
        slot = self.rng.choice(self.slots)
        assert slot.process is not None
        if slot.process.poll() is None:
            os.kill(slot.process.pid, signal.SIGKILL)
        slot.process.wait(10)
        self.kills[slot.role] += 1
        self._spawn(slot)
        return slot.label

    def check(self) -> list[str]:
        """Replace any process that exited on its own; returns what happened to them."""
        found: list[str] = []
        for slot in self.slots:
            assert slot.process is not None
            code = slot.process.poll()
            if code is None:
                continue
            found.append(f"{slot.label} exited by itself with code {code}: {self._tail(slot)}")
            self._spawn(slot)
        self.unexpected.extend(found)
        return found

    def stop(self, timeout: float = 60.0) -> dict[str, int]:
        """SIGTERM every process (a clean stop) and collect the exit codes."""
        signalled = time.monotonic()
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            assert slot.process is not None
            try:
                code = slot.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                slot.process.kill()
                code = slot.process.wait()
                self.unexpected.append(f"{slot.label} did not stop within {timeout:g}s of SIGTERM")
            self.exit_codes[slot.label] = code
            young = signalled - slot.started < STARTUP_GRACE_S
            if code != 0 and not (code == -signal.SIGTERM and young):
                self.unexpected.append(
                    f"{slot.label} exited {code} after SIGTERM: {self._tail(slot)}"
                )
        return self.exit_codes

    def _tail(self, slot: Slot) -> str:
        if slot.log is None or not slot.log.exists():
            return "(no log)"
        text = slot.log.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
        return " | ".join(line for line in text.splitlines() if line.strip()) or "(empty log)"

    @property
    def total_kills(self) -> int:
        return sum(self.kills.values())

"""Recording the intent the way an operator does: `orchestrator track` and `cancel --from-file`.

Each call starts when it is due (several may run at once, as several operators
would) and is checked when it ends, without blocking the soak's loop: kills go on
meanwhile. Their output goes to
files, not pipes: a pipe nobody reads fills up and blocks the writer.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.soak_check import Problems
from bench.soak_plan import BAD_IDS


@dataclass
class Call:
    due: float
    name: str
    command: str  # track | cancel
    path: Path  # the --from-file
    ids: list[str]  # the valid ids in it
    bad: int  # malformed lines in it

    @property
    def want_code(self) -> int:
        # some ids rejected, the rest recorded: done, and it needs a person
        return 1 if self.bad else 0


def write_calls(
    tracked: list[str],
    asked: list[str],
    *,
    waves: int,
    gap: float,
    start: float,
    work_dir: Path,
    rng: random.Random,
) -> list[Call]:
    """One `track` call now, then the ids to cancel split into waves ``gap`` seconds apart.

    The first wave also holds a few malformed ids, a comment and a blank line.
    """
    calls: list[Call] = []
    if tracked:
        path = work_dir / "track.txt"
        path.write_text("\n".join(tracked) + "\n")
        calls.append(Call(start, "track", "track", path, tracked, 0))
    asked = asked[:]
    rng.shuffle(asked)
    waves = max(1, min(waves, len(asked)))
    for n in range(waves):
        part = asked[n::waves]
        bad = list(BAD_IDS) if n == 0 else []
        lines = [*part, *bad, "# comments and blank lines are skipped", ""]
        rng.shuffle(lines)
        path = work_dir / f"cancel-wave-{n}.txt"
        path.write_text("\n".join(lines) + "\n")
        calls.append(Call(start + n * gap, f"cancel wave {n}", "cancel", path, part, len(bad)))
    return calls


class CliCalls:
    """Runs each call when due; problems go to ``problems``."""

    def __init__(
        self, calls: list[Call], env: dict[str, str], work_dir: Path, problems: Problems
    ) -> None:
        self.queue = calls[:]
        self.env = env
        self.work_dir = work_dir
        self.problems = problems
        self.running: list[tuple[Call, subprocess.Popen[bytes]]] = []
        self.cancels_recorded = False  # a cancel call has ended: there is work to interrupt

    @property
    def pending(self) -> bool:
        return bool(self.queue or self.running)

    def tick(self, now: float) -> list[str]:
        """Collect the calls that ended and start the due ones; returns lines to log."""
        lines: list[str] = []
        for call, process in self.running[:]:
            if process.poll() is not None:
                self.running.remove((call, process))
                self.cancels_recorded |= call.command == "cancel"
                lines.append(self._check(call, process.returncode))
        while self.queue and now >= self.queue[0].due:
            call = self.queue.pop(0)
            args = [call.command, "--from-file", str(call.path), "--json"]
            if call.command == "cancel":
                args += ["--reason", "soak", "--by", "soak"]
            with self._out(call).open("wb") as out, self._err(call).open("wb") as err:
                process = subprocess.Popen(
                    [sys.executable, "-m", "orchestrator", *args],
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                )
            self.running.append((call, process))
        return lines

    def wait(self, timeout: float) -> None:
        """Finish every call (used when the loop ends early)."""
        while self.pending:
            for _, process in self.running:
                process.wait(timeout)
            self.tick(float("inf"))

    def _out(self, call: Call) -> Path:
        return self.work_dir / f"{call.path.stem}.out.json"

    def _err(self, call: Call) -> Path:
        return self.work_dir / f"{call.path.stem}.err.log"

    def _check(self, call: Call, code: int) -> str:
        err = self._err(call).read_text(errors="replace").strip()[-300:]
        try:
            data = json.loads(self._out(call).read_text() or "{}")
        except json.JSONDecodeError:
            data = {}
        if call.command == "track":
            recorded = [*data.get("tracked", []), *data.get("already_tracked", [])]
        else:
            recorded = [*data.get("requested", []), *data.get("already_requested", [])]
        if code != call.want_code or sorted(recorded) != sorted(call.ids):
            self.problems.add(
                "cli",
                f"{call.name}: exit {code} (want {call.want_code}), recorded "
                f"{len(recorded)} of {len(call.ids)} ids: {err}",
            )
        rejected = data.get("rejected", [])
        if not isinstance(rejected, list) or len(rejected) != call.bad:
            self.problems.add("cli", f"{call.name}: rejected {rejected!r}, want {call.bad} ids")
        return f"  {call.name}: {len(call.ids)} ids, exit {code}"

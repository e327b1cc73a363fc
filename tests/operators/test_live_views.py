"""Live views (issue #14): `status --watch` redraws in a real terminal (a pty) when a
batch changes in the database, and Ctrl-C ends it with exit 0; `show --follow` ends
by itself once nothing more can happen to the batch."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import sys
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from orchestrator.clock import utcnow
from orchestrator.db.database import Database

from . import fleet as f
from .conftest import Run

DEADLINE_SECONDS = 60.0  # generous: two cores shared by many test runs


class Terminal:
    """A process on a pseudo-terminal, its output read as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the pty is its controlling terminal
            # As a person's shell leaves it: a run started in the background (`cmd &` in a
            # script, as CI may do) ignores SIGINT, and that would pass to the child, whose
            # Python then never turns Ctrl-C into KeyboardInterrupt.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execve(argv[0], argv, env)
        self.seen = ""

    def wait_for(self, text: str, *, after: int = 0) -> int:
        """Read until `text` appears past offset `after`; where it starts. Bounded."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while (found := self.seen.find(text, after)) < 0:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} on the terminal; it shows:\n{self.seen[-3000:]}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"ended before {text!r}:\n{self.seen[-3000:]}")
                self.seen += chunk.decode("utf-8", "replace")
        return found

    def exit_code(self) -> int:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            ready, _, _ = select.select([self.fd], [], [], 0.5)  # drain, so it can finish
            if ready:
                with contextlib.suppress(OSError):
                    self.seen += os.read(self.fd, 65536).decode("utf-8", "replace")
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"did not end:\n{self.seen[-3000:]}")

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


@pytest.fixture
def terminal_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "OPENAI_"))}
    env.update({"TERM": "xterm-256color", "COLUMNS": "200", "LINES": "50", "NO_COLOR": "1"})
    return env


@pytest.fixture
def watching(database: Database, db_url: str, terminal_env: dict[str, str]) -> Iterator[Terminal]:
    now = utcnow()
    f.observe(database, f.payload("batch_watched", "in_progress", created=now), now)
    argv = [sys.executable, "-m", "orchestrator", "--database-url", db_url]
    term = Terminal([*argv, "status", "--watch", "--interval", "0.2"], terminal_env)
    yield term
    term.close()


def test_status_watch_redraws_when_a_batch_changes_and_ctrl_c_exits_0(
    database: Database, watching: Terminal
) -> None:
    first = watching.wait_for("in_progress")
    watching.wait_for("Ctrl-C to stop", after=0)
    now = utcnow() + timedelta(seconds=1)
    body = f.payload("batch_watched", "cancelled", created=now, cancelling_at=now, cancelled_at=now)
    f.observe(database, body, now)  # what the reconciler records when it polls
    redrawn = watching.wait_for("batch_watched  cancelled", after=first)
    assert redrawn > first
    os.write(watching.fd, b"\x03")  # Ctrl-C, through the terminal as a person types it
    assert watching.exit_code() == 0


def test_show_follow_ends_by_itself_when_nothing_more_can_happen(ask: Run) -> None:
    code, out, _ = ask("show", f.CANCELLED, "--follow", "--interval", "0.1")
    assert code == 0
    assert f"{f.CANCELLED}: cancelled" in out and out.rstrip().endswith("stopped following")


def test_ctrl_c_on_a_watch_exits_0(ask: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", interrupted)
    for args in (["status", "--watch"], ["show", f.IN_PROGRESS, "--follow"]):
        code, out, _ = ask(*args)
        assert code == 0, args
        assert f.IN_PROGRESS in out


@pytest.mark.parametrize("args", [["status", "--watch"], ["show", f.CANCELLED, "--follow"]])
def test_a_live_view_is_not_json(ask: Run, args: list[str]) -> None:
    code, _, err = ask(*args, "--json")
    assert code == 2 and "poll" in err


def test_the_interval_is_bounded(ask: Run) -> None:
    with pytest.raises(SystemExit) as exited:
        ask("status", "--watch", "--interval", "0")
    assert exited.value.code == 2

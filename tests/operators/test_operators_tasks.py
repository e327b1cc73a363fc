"""docs/operators.md's "Tasks" (issue #14): every command there runs as written against
the test fleet, in order, and does what the page says."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import pytest

from orchestrator.cli.main import main
from orchestrator.clock import utcnow
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database

from . import fleet as f

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operators.md"


def task_commands() -> dict[str, list[list[str]]]:
    """Each task's title -> its commands, as argument lists."""
    text = GUIDE.read_text()
    section = text[text.index("\n## Tasks\n") :]
    section = section[: section.index("\n## ", 1)]
    tasks: dict[str, list[list[str]]] = {}
    for title, body in re.findall(r"\n### (.+?)\n(.*?)(?=\n### |\Z)", section, re.DOTALL):
        blocks = re.findall(r"```\n(.*?)```", body, re.DOTALL)
        tasks[title] = [
            shlex.split(line)[1:]
            for block in blocks
            for line in block.splitlines()
            if line.startswith("orchestrator ")
        ]
    return tasks


def test_the_guide_has_the_four_tasks_of_the_issue() -> None:
    titles = list(task_commands())
    for wanted in (
        "Stop everything team X started today",
        "What did batch Y give us",
        "Why is Z stuck",
        "We tracked the wrong id",
    ):
        assert wanted in titles
    assert all(task_commands().values())


def test_every_task_command_runs_as_written(
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = Database.connect(sqlite_url)
    f.populate(db, utcnow())
    # The mistake "We tracked the wrong id" corrects: a cancel asked for the wrong id.
    CancelStore(db).request([f.UNOBSERVED], now=utcnow(), requested_by="oncall", reason="oops")
    db.dispose()
    monkeypatch.chdir(tmp_path)
    for name in ("ORCHESTRATOR_CONFIG", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")

    def ctrl_c(_seconds: float) -> None:  # a live view ends when the person presses Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", ctrl_c)
    said: dict[str, str] = {}
    for title, commands in task_commands().items():
        for args in commands:
            capsys.readouterr()
            code = main(["--database-url", sqlite_url, *args])
            out, err = capsys.readouterr()
            assert code == 0, (title, args, out[-2000:], err[-2000:])
            said[" ".join(args)] = out
    assert "results     2 answers, 3 errors kept" in said[f"show {f.CANCELLED}"]
    assert "OVERDUE since" in said[f"show {f.SLOW_CANCEL}"]
    (plan,) = [out for args, out in said.items() if args.endswith("--dry-run") and "team" in args]
    assert f.IN_PROGRESS in plan  # the plan names the team's batch
    table = said[f"results {f.CANCELLED} --kind output -o table"]
    assert "req-001" in table and "answer 1" in table and "req-003" not in table
    assert len((tmp_path / "answers.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "errors.csv").exists()
    assert said[f"cancel --withdraw {f.UNOBSERVED}"].startswith("withdrew 1 cancel request")
    assert main(["--database-url", sqlite_url, "show", f.UNOBSERVED]) == 4  # forgotten

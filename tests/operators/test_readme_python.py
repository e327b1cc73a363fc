"""The README's Python API examples (issue #14 item 7), run as written against a
SQLite database holding the test fleet: they must work, and say what they claim."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import Orchestrator
from orchestrator.clock import utcnow
from orchestrator.db.database import Database
from orchestrator.errors import InvalidBatchId, UnknownBatch

from . import fleet as f

README = Path(__file__).resolve().parents[2] / "README.md"


def python_examples() -> list[str]:
    text = README.read_text()
    section = text[text.index("## From Python") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def test_the_readme_examples_run_and_say_what_they_claim(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = Database.connect(sqlite_url)
    f.populate(db, utcnow())
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", sqlite_url)
    monkeypatch.delenv("ORCHESTRATOR_CONFIG", raising=False)
    examples = python_examples()
    assert len(examples) == 2
    namespace: dict[str, object] = {}
    for code in examples:
        exec(compile(code, str(README), "exec"), namespace)  # our own README's code
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "['batch_0123abc']"
    assert printed[1] == "cancelled closed cancelled"
    assert printed[2] == "2 answers, 3 errors kept"
    assert len(printed) == 3 + 2 and all(line.startswith("req-") for line in printed[3:])
    with Orchestrator(sqlite_url) as orch:  # the examples' effects, as the CLI sees them
        assert orch.batch("batch_0123abc").cancel_state == "pending"
        assert orch.batch("batch_def456").status == "unobserved"
        with pytest.raises(InvalidBatchId):
            orch.cancel(["batch_ok", "not an id"])
        with pytest.raises(UnknownBatch):  # refused whole: nothing was recorded
            orch.batch("batch_ok")
    db.dispose()


def test_importing_orchestrator_stays_light() -> None:
    code = "import orchestrator, sys; print('sqlalchemy' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"

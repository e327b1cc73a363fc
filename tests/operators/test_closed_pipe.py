"""`orchestrator status | head -1`: the reader leaving early is not an error (exit 0).

The pipe's read end is closed before the command writes, so its first write
fails with EPIPE every time: no timing involved.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

RUN_MAIN = "from orchestrator.cli.main import main; raise SystemExit(main())"


@pytest.mark.parametrize(
    "command", [["status"], ["status", "--json"], ["config", "show"], ["config", "show", "--json"]]
)
def test_a_closed_pipe_exits_0_quietly(sqlite_url: str, command: list[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-c", RUN_MAIN, *command],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env={**os.environ, "ORCHESTRATOR_DATABASE_URL": sqlite_url},
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (0, "")

"""`orchestrator completion bash|zsh|fish` (issue #14): scripts made from the parser,
checked by the shells themselves. bash completes a command and a status (the script
sourced, its function called with COMP_WORDS set, as bash does on Tab); fish answers
`complete -C`; zsh loads the script and registers it. zsh and fish are installed by
.ci/run; without them here, their tests skip."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.cli.main import main
from orchestrator.core.status import UNOBSERVED, BatchStatus


def script(shell: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    capsys.readouterr()
    assert main(["completion", shell]) == 0
    path = tmp_path / f"orchestrator.{shell}"
    path.write_text(capsys.readouterr().out)
    return path


def bash_completes(path: Path, *words: str) -> list[str]:
    """What Tab offers after `words` (the last is the word being completed)."""
    quoted = " ".join(f"'{w}'" for w in words)
    program = (
        f"source '{path}'; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; "
        '_orchestrator; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [line for line in done.stdout.splitlines() if line]


def test_bash_completes_a_command_an_option_and_a_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = script("bash", tmp_path, capsys)
    assert bash_completes(path, "orchestrator", "sta") == ["status"]
    assert bash_completes(path, "orchestrator", "status", "--wa") == ["--watch"]
    assert bash_completes(path, "orchestrator", "status", "--status", "can") == [
        "cancelling",
        "cancelled",
    ]
    every = bash_completes(path, "orchestrator", "status", "--status", "")
    assert every == [*(s.value for s in BatchStatus), UNOBSERVED]  # from the enum
    # A comma list completes its last item; global options and their values are skipped.
    assert bash_completes(path, "orchestrator", "status", "--status", "failed,in_") == [
        "failed,in_progress"
    ]
    assert bash_completes(path, "orchestrator", "--log-level", "INFO", "db", "up") == ["upgrade"]
    assert bash_completes(path, "orchestrator", "results", "batch_x", "-o", "") == [
        "jsonl",
        "json",
        "csv",
        "table",
    ]
    # One output scheme: -o names a format on every command that prints a report.
    assert bash_completes(path, "orchestrator", "cancel", "-o", "") == [
        "table",
        "json",
        "jsonl",
        "ids",
    ]
    assert bash_completes(path, "orchestrator", "sync", "--output", "") == ["table", "json"]
    # A retired spelling is offered nowhere.
    assert "--format" not in bash_completes(path, "orchestrator", "results", "--f")
    assert bash_completes(path, "orchestrator", "status", "--sinc") == []


def run_in(shell: list[str], program: str, tmp_path: Path) -> str:
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [*shell, program], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completes_a_command_and_a_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = script("fish", tmp_path, capsys)
    asks = "complete -C 'orchestrator sta'; complete -C 'orchestrator status --status can'"
    out = run_in(["fish", "--no-config", "-c"], f"source '{path}'; {asks}", tmp_path)
    offered = [line.split("\t")[0] for line in out.splitlines()]
    assert "status" in offered and "cancelling" in offered and "cancelled" in offered


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_loads_the_script_and_registers_the_completion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = script("zsh", tmp_path, capsys)
    program = f"source '{path}' && print -r -- $_comps[orchestrator]"
    assert "_orchestrator" in run_in(["zsh", "-f", "-c"], program, tmp_path)

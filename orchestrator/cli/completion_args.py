"""`orchestrator completion bash|zsh|fish`: the arguments (what it does: completion_commands)."""

from __future__ import annotations

import argparse

SHELLS = ("bash", "zsh", "fish")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh or fish)",
        description=(
            "Print a script that completes orchestrator's commands, their options, and the "
            "values those take (statuses, formats, log levels). Load it once per shell, e.g. "
            "in ~/.bashrc: `source <(orchestrator completion bash)`; in ~/.zshrc: `source "
            "<(orchestrator completion zsh)`; for fish: `orchestrator completion fish > "
            "~/.config/fish/completions/orchestrator.fish`."
        ),
    )
    completion.add_argument("shell", choices=SHELLS, help="the shell to complete for")
    completion.set_defaults(handler="completion_commands.run_completion", needs_schema=False)

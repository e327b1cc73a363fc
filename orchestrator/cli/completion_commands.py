"""`orchestrator completion bash|zsh|fish`: completion scripts made from the parser itself.

Walking the argparse tree that `--help` prints keeps the scripts true as commands and
options change: no second list to forget. Values come from the options' `choices`
(statuses from `core.status` via selection.STATUS_CHOICES, formats, log levels).
Options that take a comma list (`--status in_progress,cancelling`) complete each item
after the last comma. zsh loads the bash script through `bashcompinit`, which every
zsh ships.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, field

from orchestrator.cli.context import Context, Exit
from orchestrator.cli.main import build_parser

PROG = "orchestrator"


@dataclass
class Command:
    """One parser: its options (flag -> choices, None for a flag taking no value or a
    free value), its subcommands by name, and what each is for."""

    flags: dict[str, tuple[str, ...] | None] = field(default_factory=dict)
    takes_value: set[str] = field(default_factory=set)
    helps: dict[str, str] = field(default_factory=dict)
    subcommands: dict[str, Command] = field(default_factory=dict)
    sub_helps: dict[str, str] = field(default_factory=dict)


def describe(parser: argparse.ArgumentParser) -> Command:
    command = Command()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, child in action.choices.items():
                command.subcommands[name] = describe(child)
                command.sub_helps[name] = helps.get(name, "")
            continue
        if isinstance(action, argparse._HelpAction | argparse._VersionAction) and not (
            action.option_strings
        ):
            continue
        if action.help == argparse.SUPPRESS:  # a retired spelling (cli/output.retire)
            continue
        # A comma-list type (`--status in_progress,cancelling`) names its values on
        # itself: argparse's `choices` would refuse the list as one value.
        offered = action.choices or getattr(action.type, "choices", None)
        choices = tuple(str(c) for c in offered) if offered else None
        for flag in action.option_strings:
            command.flags[flag] = choices
            command.helps[flag] = (action.help or "").replace("%%", "%")
            if action.nargs != 0:
                command.takes_value.add(flag)
    return command


def run_completion(ctx: Context) -> Exit:
    tree = describe(build_parser())
    script = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}[ctx.args.shell](tree)
    sys.stdout.write(script)
    return Exit.OK


# --- bash (and zsh) ---------------------------------------------------------------


def _words(words: list[str] | tuple[str, ...]) -> str:
    return shlex.quote(" ".join(words))


def _bash_cases(path: str, command: Command, lines: list[str]) -> None:
    """`case` arms keyed by the command path (`status`, `db upgrade`)."""
    words = [*command.subcommands, *command.flags]
    lines.append(f"        {shlex.quote(path)}) offered={_words(words)} ;;")
    for name, child in command.subcommands.items():
        _bash_cases(f"{path} {name}".strip(), child, lines)


def _value_cases(path: str, command: Command, arms: list[str]) -> None:
    """`case` arms keyed by `PATH|FLAG`: one flag's values can differ per command."""
    for flag, choices in command.flags.items():
        if choices:
            key = shlex.quote(f"{path}|{flag}")
            items = f'$(_orchestrator_items {_words(choices)} "$cur")'
            arms.append(f"        {key}) COMPREPLY=({items}); return ;;")
    for name, child in command.subcommands.items():
        _value_cases(f"{path} {name}".strip(), child, arms)


def _takes_value(command: Command, found: set[str]) -> None:
    found |= command.takes_value
    for child in command.subcommands.values():
        _takes_value(child, found)


def bash_script(tree: Command) -> str:
    cases: list[str] = []
    _bash_cases("", tree, cases)
    value_arms: list[str] = []
    _value_cases("", tree, value_arms)
    takes: set[str] = set()
    _takes_value(tree, takes)
    return f"""\
# bash completion for {PROG}: source <({PROG} completion bash)
_orchestrator_items() {{
    # Complete the last item of a comma list: in_progress,can -> in_progress,cancelling
    local choices=$1 cur=$2 head=""
    if [[ $cur == *,* ]]; then head=${{cur%,*}},; cur=${{cur##*,}}; fi
    local item
    for item in $(compgen -W "$choices" -- "$cur"); do printf '%s\\n' "$head$item"; done
}}

_orchestrator() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    local takes_value={_words(sorted(takes))}
    # The command path so far: the words that are not options nor an option's value.
    # (not `path` nor `words`: both are special in zsh)
    local at="" i word skip=0 offered
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${{COMP_WORDS[i]}}
        if ((skip)); then skip=0; continue; fi
        if [[ $word == -* ]]; then
            [[ " $takes_value " == *" $word "* ]] && skip=1
            continue
        fi
        case "${{at:+$at }}$word" in
{chr(10).join(f"            {shlex.quote(p)}) at={shlex.quote(p)} ;;" for p in _paths(tree))}
        esac
    done
    case "$at|$prev" in
{chr(10).join(value_arms)}
    esac
    if [[ " $takes_value " == *" $prev "* ]]; then
        COMPREPLY=($(compgen -f -- "$cur")); return
    fi
    case $at in
{chr(10).join(cases)}
    esac
    COMPREPLY=($(compgen -W "$offered" -- "$cur"))
}}
complete -o default -F _orchestrator {PROG}
"""


def _paths(command: Command, prefix: str = "") -> list[str]:
    found: list[str] = []
    for name, child in command.subcommands.items():
        path = f"{prefix} {name}".strip()
        found += [path, *_paths(child, path)]
    return found


def zsh_script(tree: Command) -> str:
    return (
        f"# zsh completion for {PROG}: source <({PROG} completion zsh)\n"
        "autoload -U +X compinit && compinit\n"
        "autoload -U +X bashcompinit && bashcompinit\n" + bash_script(tree)
    )


# --- fish -------------------------------------------------------------------------


def _fish_text(text: str) -> str:
    return "'" + " ".join(text.split()).replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish_script(tree: Command) -> str:
    lines = [
        f"# fish completion for {PROG}: {PROG} completion fish | source",
        f"complete -c {PROG} -f",
    ]

    def options(condition: str, command: Command) -> None:
        for flag, choices in command.flags.items():
            spec = f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}"
            arg = ""
            if choices:
                arg = f" -x -a {_fish_text(' '.join(choices))}"
            elif flag in command.takes_value:
                arg = " -r -F"
            help_text = _fish_text(command.helps.get(flag, "")[:80])
            lines.append(f"complete -c {PROG} -n {condition} {spec}{arg} -d {help_text}")

    options("'true'", tree)
    for name, child in tree.subcommands.items():
        lines.append(
            f"complete -c {PROG} -n '__fish_use_subcommand' -a {name} "
            f"-d {_fish_text(tree.sub_helps[name][:80])}"
        )
        seen = f"'__fish_seen_subcommand_from {name}'"
        options(seen, child)
        for sub, grandchild in child.subcommands.items():
            lines.append(
                f"complete -c {PROG} -n {seen} -a {sub} -d {_fish_text(child.sub_helps[sub][:80])}"
            )
            options(f"'__fish_seen_subcommand_from {sub}'", grandchild)
    return "\n".join(lines) + "\n"

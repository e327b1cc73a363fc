"""Entry point: parse, load settings, dispatch, and turn errors into exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from orchestrator import __version__, logs
from orchestrator.cli import (
    cancel_commands,
    config_commands,
    db_commands,
    demo_command,
    health_commands,
    reconcile_commands,
    results_commands,
    simulate_command,
    status_commands,
    sync_commands,
    upkeep_commands,
    worker_commands,
)
from orchestrator.cli.context import Context, Exit
from orchestrator.errors import (
    ConfigError,
    DatabaseError,
    InvalidBatchId,
    OrchestratorError,
    UnknownBatch,
)
from orchestrator.settings import load_settings

COMMAND_MODULES: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    db_commands.register,
    config_commands.register,
    cancel_commands.register,
    worker_commands.register,
    reconcile_commands.register,
    demo_command.register,
    simulate_command.register,
    status_commands.register,
    results_commands.register,
    sync_commands.register,
    health_commands.register,
    upkeep_commands.register,
]

EPILOG = """\
exit codes: 0 ok, 1 done but something needs a person, 2 bad arguments or settings,
3 database unreachable, busy or not migrated, 4 unknown batch, 130 interrupted.

Settings: config/orchestrator.toml (or ORCHESTRATOR_CONFIG), then ORCHESTRATOR_* and
OPENAI_* environment variables, then flags. The API key comes from OPENAI_API_KEY only.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Durably cancel OpenAI Batch API jobs and keep every paid-for partial result.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"orchestrator {__version__}")
    add_global_options(parser, default=None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMAND_MODULES:
        register(commands)
    for command in _subcommands(parser):
        # `orchestrator status --database-url X` works as well as the other order. Not
        # given, the subcommand must not overwrite what was given before it: SUPPRESS.
        add_global_options(command, default=argparse.SUPPRESS)
    return parser


def add_global_options(parser: argparse.ArgumentParser, *, default: object) -> None:
    parser.add_argument(
        "--database-url",
        dest="setting_database_url",
        metavar="URL",
        default=default,
        help="sqlite:///PATH or postgresql://USER@HOST/DB (env ORCHESTRATOR_DATABASE_URL)",
    )
    parser.add_argument(
        "--log-level",
        dest="setting_log_level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=default,
        help="(env ORCHESTRATOR_LOG_LEVEL)",
    )
    parser.add_argument(
        "--log-format",
        dest="setting_log_format",
        choices=["text", "json"],
        default=default,
        help="(env ORCHESTRATOR_LOG_FORMAT)",
    )


def _subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every subcommand parser below `parser`, nested ones (`db upgrade`) included."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += [child, *_subcommands(child)]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Flags that override a setting are stored as `setting_<name>` by every command.
    overrides = {
        key.removeprefix("setting_"): value
        for key, value in vars(args).items()
        if key.startswith("setting_") and value is not None
    }
    try:
        settings = load_settings(overrides=overrides)
        logs.configure(settings.log_level, settings.log_format, settings.api_key)
        code: Exit = args.handler(Context(settings=settings, args=args))
        return int(code)
    except KeyboardInterrupt:
        return int(Exit.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`orchestrator results X | head`): not an error of ours.
        # Point stdout at devnull so the interpreter's final flush stays quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(Exit.OK)
    except (ConfigError, InvalidBatchId) as exc:
        return _fail(exc, Exit.USAGE)
    except UnknownBatch as exc:
        return _fail(exc, Exit.NOT_FOUND)
    except DatabaseError as exc:
        return _fail(exc, Exit.DATABASE)
    except OrchestratorError as exc:
        return _fail(exc, Exit.ATTENTION)


def _fail(exc: BaseException, code: Exit) -> int:
    said = f"orchestrator: error: {exc}\n"
    sys.stderr.write(said)
    cause = exc.__cause__
    while cause is not None:
        first_line = str(cause).splitlines()[0] if str(cause) else ""
        # Drivers wrap the same text twice over; a cause that repeats it adds nothing.
        core = first_line.split(") ", 1)[-1] if first_line.startswith("(") else first_line
        if core not in said:
            sys.stderr.write(f"  caused by: {type(cause).__name__}: {first_line}\n")
            said += first_line
        cause = cause.__cause__
    return int(code)


if __name__ == "__main__":
    sys.exit(main())

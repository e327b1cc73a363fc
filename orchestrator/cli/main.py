"""Entry point: parse, load settings, dispatch, and turn errors into exit codes.

Start-up stays fast (`orchestrator --help` in a fraction of a second) because this
module imports only argparse-level code: no SQLAlchemy, alembic, rich, httpx or
simulator. A command is two modules:

- `cli/NAME_args.py` (light): `register(commands)` adds its parser and names its
  implementation as a string, `set_defaults(handler="NAME_commands.run_x")`;
- `cli/NAME_commands.py` (heavy): `run_x(ctx) -> Exit` and everything it needs,
  imported only when that command runs (`load_handler`).

A new command adds its `register` to COMMANDS below. tests/unit/test_cli_startup.py
checks that every named handler exists and that importing this module stays light.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from orchestrator import __version__, logs
from orchestrator.cli import (
    cancel_args,
    completion_args,
    config_args,
    console_args,
    db_args,
    demo_args,
    forget_args,
    health_args,
    reconcile_args,
    results_args,
    simulate_args,
    status_args,
    sync_args,
    upkeep_args,
    webhooks_args,
    worker_args,
)
from orchestrator.cli.context import Context, Exit
from orchestrator.core.visible import visible
from orchestrator.errors import (
    ConfigError,
    DatabaseError,
    InvalidBatchId,
    OrchestratorError,
    UnknownBatch,
)
from orchestrator.secret import Secret
from orchestrator.settings import load_settings

Handler = Callable[[Context], Exit]

# In the order `--help` lists them.
COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    db_args.register,
    config_args.register,
    cancel_args.register,
    forget_args.register,
    worker_args.register,
    reconcile_args.register,
    demo_args.register,
    simulate_args.register,
    status_args.register,
    results_args.register,
    sync_args.register,
    health_args.register,
    upkeep_args.register,
    webhooks_args.register,
    console_args.register,
    completion_args.register,
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
    for register in COMMANDS:
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


def load_handler(name: str) -> Handler:
    """`"status_commands.run_status"`: that function of `orchestrator.cli.status_commands`,
    imported now, for the one command that runs."""
    module, _, function = name.rpartition(".")
    handler: Handler = getattr(importlib.import_module(f"orchestrator.cli.{module}"), function)
    return handler


# Arguments that may hold any bytes: file names (the OS allows them) and batch ids
# (each is checked and reported on its own, so the good ones still go through).
ANY_BYTES = frozenset({"to", "from_file", "ids", "batch_id"})


def _not_utf8(args: argparse.Namespace) -> str | None:
    """The first option whose value holds bytes that are not UTF-8 (Python hands them
    over as lone surrogates, which crash the first write to the database or screen)."""
    for dest, value in vars(args).items():
        if dest in ANY_BYTES:
            continue
        texts = value if isinstance(value, list | tuple) else [value]
        for text in texts:
            for part in text if isinstance(text, tuple) else [text]:
                if isinstance(part, str) and not part.isascii():
                    try:
                        part.encode("utf-8")
                    except UnicodeEncodeError:
                        return f"--{dest.removeprefix('setting_').replace('_', '-')}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    bad = _not_utf8(args)
    if bad is not None:
        return _fail(
            ConfigError(f"{bad}: not valid UTF-8 (check the terminal's encoding)"), Exit.USAGE
        )
    # Flags that override a setting are stored as `setting_<name>` by every command.
    overrides = {
        key.removeprefix("setting_"): value
        for key, value in vars(args).items()
        if key.startswith("setting_") and value is not None
    }
    secrets: tuple[Secret, ...] = ()
    try:
        settings = load_settings(overrides=overrides)
        secrets = settings.secrets()
        logs.configure(settings.log_level, settings.log_format, *secrets)
        handler = load_handler(args.handler)
        return int(handler(Context(settings=settings, args=args)))
    except KeyboardInterrupt:
        return int(Exit.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`orchestrator results X | head`): not an error of ours.
        # Point stdout at devnull so the interpreter's final flush stays quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(Exit.OK)
    except (ConfigError, InvalidBatchId) as exc:
        return _fail(exc, Exit.USAGE, secrets)
    except UnknownBatch as exc:
        return _fail(exc, Exit.NOT_FOUND, secrets)
    except DatabaseError as exc:
        return _fail(exc, Exit.DATABASE, secrets)
    except OrchestratorError as exc:
        return _fail(exc, Exit.ATTENTION, secrets)
    except Exception as exc:
        # A database error no layer foresaw (a disk that is full, a file made read-only
        # under us) is still a database problem: exit 3 with its text, not a traceback.
        from sqlalchemy.exc import DBAPIError  # late: `orchestrator --help` stays light

        if isinstance(exc, DBAPIError):
            said = str(exc.orig or exc).strip().splitlines() or [type(exc).__name__]
            return _fail(DatabaseError(f"database error: {said[0]}"), Exit.DATABASE, secrets)
        raise


def _fail(exc: BaseException, code: Exit, secrets: tuple[Secret, ...] = ()) -> int:
    # Messages quote the server, files and the database: shown with controls spelled
    # out, and (defence in depth) without the key or the database's password.
    def shown(text: str) -> str:
        for secret in secrets:
            if len(secret.reveal()) >= 4:
                text = text.replace(secret.reveal(), "***")
        return visible(text)

    said = f"orchestrator: error: {shown(str(exc))}\n"
    sys.stderr.write(said)
    cause = exc.__cause__
    while cause is not None:
        first_line = shown(str(cause).splitlines()[0]) if str(cause) else ""
        # Drivers wrap the same text twice over; a cause that repeats it adds nothing.
        core = first_line.split(") ", 1)[-1] if first_line.startswith("(") else first_line
        if core not in said:
            sys.stderr.write(f"  caused by: {type(cause).__name__}: {first_line}\n")
            said += first_line
        cause = cause.__cause__
    return int(code)


if __name__ == "__main__":
    sys.exit(main())

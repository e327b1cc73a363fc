"""Start-up stays light: the command line imports argparse-level code only, and each
command imports what it needs when it runs (see the docstring of orchestrator.cli.main;
the timings are in bench/startup.py and docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orchestrator.cli.main import _subcommands, build_parser, load_handler
from orchestrator.cli.simulate_args import DEFAULT_API_KEY

# Heavy packages `orchestrator --help` must not import.
NOT_FOR_HELP = (
    "orchestrator.simulator",
    "orchestrator.db",
    "orchestrator.api",
    "alembic",
    "sqlalchemy",
    "rich",
    "httpx",
    "psycopg",
    "tenacity",
    "transitions",
    "prometheus_client",
    "starlette",
    "uvicorn",
    "jinja2",
)
# What `status` on a SQLite database needs none of: it reads through sqlite3 alone
# (db/sqlite_reader.py), so not even SQLAlchemy, whose import alone takes longer
# than the 0.35 s status may take on a slow host.
NOT_FOR_STATUS = (
    "orchestrator.simulator",
    "orchestrator.api",
    "alembic",
    "httpx",
    "psycopg",
    "tenacity",
    "prometheus_client",
    "sqlalchemy",
    "orchestrator.db.database",
    "orchestrator.db.models",
    "orchestrator.db.queries",
    # nor the cancel store and the lifecycle rules behind it (status reads; it applies
    # no rule)
    "orchestrator.db.cancels",
    "orchestrator.db.batches",
    "orchestrator.core.cancel_request",
    "orchestrator.core.apply",
)


def modules_after(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running `code`."""
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(*sorted(sys.modules))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()[-1].split()


def imported(modules: list[str], packages: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(f"{p}.") for p in packages)]


def test_importing_the_command_line_imports_nothing_heavy() -> None:
    modules = modules_after("import orchestrator.cli.main")
    assert "orchestrator.cli.main" in modules
    assert imported(modules, NOT_FOR_HELP) == []


def test_status_on_sqlite_imports_only_what_it_needs(sqlite_url: str) -> None:
    modules = modules_after(
        "from orchestrator.cli.main import main\n"
        f"assert main(['--database-url', {sqlite_url!r}, 'status', '--json']) == 0"
    )
    assert "orchestrator.cli.status_commands" in modules
    assert imported(modules, NOT_FOR_STATUS) == []


@pytest.mark.parametrize("output", ["table", "wide", "json", "jsonl", "ids"])
def test_status_of_a_fleet_on_sqlite_imports_no_sqlalchemy(sqlite_url: str, output: str) -> None:
    from orchestrator.clock import utcnow
    from orchestrator.db.database import Database
    from tests.operators.fleet import populate

    db = Database.connect(sqlite_url)
    populate(db, utcnow())  # batches of every kind, and a sending pause
    db.dispose()
    modules = modules_after(
        "from orchestrator.cli.main import main\n"
        f"assert main(['--database-url', {sqlite_url!r}, 'status', '-o', {output!r}]) == 0"
    )
    assert "orchestrator.db.sqlite_reader" in modules
    assert imported(modules, NOT_FOR_STATUS) == []


def test_status_with_nothing_to_show_prints_its_line_without_rich(sqlite_url: str) -> None:
    modules = modules_after(
        "from orchestrator.cli.main import main\n"
        f"assert main(['--database-url', {sqlite_url!r}, 'status']) == 0"
    )
    assert "orchestrator.cli.status_commands" in modules
    assert imported(modules, (*NOT_FOR_STATUS, "rich")) == []


def test_every_command_names_a_handler_that_exists() -> None:
    leaves = [p for p in _subcommands(build_parser()) if not _subcommands(p)]
    assert len(leaves) > 10
    for parser in leaves:
        name = parser.get_default("handler")
        assert isinstance(name, str), f"{parser.prog} names no handler"
        assert callable(load_handler(name)), f"{parser.prog}: {name}"


@pytest.mark.parametrize("name", ["status_commands.missing", "no_such_commands.run"])
def test_a_misnamed_handler_fails_loudly(name: str) -> None:
    with pytest.raises((AttributeError, ModuleNotFoundError)):
        load_handler(name)


def test_the_simulate_help_names_the_simulators_own_key() -> None:
    from orchestrator.simulator import DEFAULT_API_KEY as simulators

    assert simulators == DEFAULT_API_KEY


# What a worker, which sends cancels and records them, does not run: migrations, the
# reconciler's upkeep jobs, ingestion (their imports were most of its start-up).
NOT_FOR_WORKER = (
    "orchestrator.simulator",
    "orchestrator.cli.upkeep_wiring",
    "orchestrator.db.retention",
    "orchestrator.db.file_deletions",
    "orchestrator.processes.cleanup",
    "alembic",
    # nor, on SQLite, ingestion and the PostgreSQL driver it imports (~0.13 s)
    "orchestrator.processes.ingest",
    "orchestrator.db.results",
    "psycopg",
    # nor the reading of result lines and its msgspec (~0.014 s): the worker's
    # configuration names the splitter's sizes only
    "orchestrator.core.result_lines",
    "msgspec",
)


def test_the_worker_imports_no_migrations_nor_upkeep(sqlite_url: str) -> None:
    modules = modules_after(
        "import os; os.environ['OPENAI_API_KEY'] = 'sk-test-startup'\n"
        "from orchestrator.cli.main import main\n"
        f"assert main(['--database-url', {sqlite_url!r}, 'worker', '--once']) == 0"
    )
    assert "orchestrator.processes.worker" in modules
    assert imported(modules, NOT_FOR_WORKER) == []


def test_httpx_comes_without_its_command_line() -> None:
    """httpx imports its command line, and rich with it, when rich is installed: ~0.2 s
    of a worker's start-up. Under orchestrator it gets a stand-in (orchestrator/__init__)."""
    modules = modules_after(
        "import orchestrator, httpx\n"
        "try:\n    httpx._main.main()\nexcept SystemExit as exc:\n"
        "    assert 'not loaded' in str(exc)\nelse:\n    raise AssertionError('ran')"
    )
    assert "httpx" in modules
    assert imported(modules, ("rich", "click", "pygments")) == []

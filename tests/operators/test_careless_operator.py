"""A careless operator: odd files, settings and arguments get a clear error and an exit
code, never a traceback; good ids in a bad file still go through; no password is shown.

Each case runs the real command (`orchestrator.cli.main.main`) in this process.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from orchestrator import logs
from orchestrator.cli import ids_input
from orchestrator.cli.main import main
from orchestrator.db.database import Database
from orchestrator.db.models import Batch, CancelRequest
from orchestrator.settings import load_settings

GOOD = ("batch_good1", "batch_good2")
PASSWORD = "hunter2-s3cret"


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> str:
    for name in ("OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-careless-operator")
    return sqlite_url


def _stored(url: str, column: object) -> list[str]:
    db = Database.connect(url)
    try:
        with db.transaction() as session:
            return sorted(session.scalars(select(column)).all())  # type: ignore[call-overload]
    finally:
        db.dispose()


def _said(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return out + err


# --- ids files ----------------------------------------------------------------------------

IDS_FILE = (
    b"batch_good1\n"
    b"batch_\xff\xfe\n"  # line 2: not UTF-8
    + b"x" * 100_000  # line 3: far longer than any id
    + b"\nbatch_good2  # a comment\n"
)


@pytest.mark.parametrize(
    ("command", "column"),
    [(["cancel", "--by", "ops"], CancelRequest.batch_id), (["track"], Batch.id)],
)
@pytest.mark.parametrize("source", ["file", "stdin", "stdin-argument"])
def test_an_ids_file_with_bytes_that_are_not_utf8_records_the_good_ids(
    cli_env: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    command: list[str],
    column: object,
    source: str,
) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes(IDS_FILE)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(IDS_FILE)))
    where = {"file": ["--from-file", str(path)], "stdin": ["--from-file", "-"]}
    assert main([*command, *where.get(source, ["-"])]) == 1  # done; a person should look
    said = _said(capsys)
    assert "line 2: not UTF-8 (byte 0xff at column 7)" in said
    assert "line 3: longer than 4096 bytes" in said
    assert _stored(cli_env, column) == list(GOOD)


@pytest.mark.parametrize("endless", [False, True])
def test_an_ids_file_with_too_many_lines_is_refused_whole(
    cli_env: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    endless: bool,
) -> None:
    monkeypatch.setattr(ids_input, "MAX_LINES", 3)
    monkeypatch.setattr(ids_input, "MAX_BYTES", 1 << 20)
    path = tmp_path / "ids.txt"
    path.write_text("".join(f"batch_{n}\n" for n in range(4)))
    source = "/dev/zero" if endless else str(path)  # /dev/zero: one line that never ends
    assert main(["cancel", "--from-file", source]) == 2
    assert ("more than 1 MiB" if endless else "more than 3 lines") in _said(capsys)
    assert _stored(cli_env, CancelRequest.batch_id) == []


# --- files, settings and arguments that used to end in a traceback -------------------------

Setup = Callable[[pytest.MonkeyPatch, Path], list[str]]


def _not_sqlite(mp: pytest.MonkeyPatch, tmp: Path) -> list[str]:
    (tmp / "notes.txt").write_text("shopping list, not a database\n")
    mp.setenv("ORCHESTRATOR_DATABASE_URL", f"sqlite:///{tmp / 'notes.txt'}")
    return ["status"]


def _sqlite_directory(mp: pytest.MonkeyPatch, tmp: Path) -> list[str]:
    mp.setenv("ORCHESTRATOR_DATABASE_URL", f"sqlite:///{tmp}")
    return ["db", "upgrade"]


def _sqlite_fifo(mp: pytest.MonkeyPatch, tmp: Path) -> list[str]:
    os.mkfifo(tmp / "fifo")
    mp.setenv("ORCHESTRATOR_DATABASE_URL", f"sqlite:///{tmp / 'fifo'}")
    return ["db", "upgrade"]


def _uncreatable_directory(mp: pytest.MonkeyPatch, tmp: Path) -> list[str]:
    (tmp / "file").write_text("")
    mp.setenv("ORCHESTRATOR_DATABASE_URL", f"sqlite:///{tmp / 'file' / 'sub' / 'db.sqlite3'}")
    return ["db", "upgrade"]


def _read_only_database(mp: pytest.MonkeyPatch, tmp: Path) -> list[str]:
    url = os.environ["ORCHESTRATOR_DATABASE_URL"]  # migrated; opened read-only below
    mp.setenv("ORCHESTRATOR_DATABASE_URL", url.replace("///", "///file:") + "?mode=ro&uri=true")
    return ["cancel", "batch_good1"]


def _config(content: bytes | None) -> Setup:
    def setup(mp: pytest.MonkeyPatch, tmp: Path) -> list[str]:
        path = tmp / "orchestrator.toml"
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content)
        mp.setenv("ORCHESTRATOR_CONFIG", str(path))
        return ["config", "show"]

    return setup


def _env(name: str, value: str, *command: str) -> Setup:
    def setup(mp: pytest.MonkeyPatch, tmp: Path) -> list[str]:
        mp.setenv(name, value)
        return list(command or ["config", "show"])

    return setup


def _argv(*command: str) -> Setup:
    return lambda mp, tmp: list(command)


CASES: dict[str, tuple[Setup, int, str]] = {
    "database file not sqlite": (_not_sqlite, 3, "not a SQLite database"),
    "database path a directory": (_sqlite_directory, 3, "is a directory"),
    "database path a fifo": (_sqlite_fifo, 3, "not a regular file"),
    "database directory cannot be made": (_uncreatable_directory, 3, "/file/sub"),
    "database read-only": (_read_only_database, 3, "readonly database"),
    "config a directory": (_config(None), 2, "not a regular file"),
    "config not utf-8": (_config(b'[worker]\nconcurrency = "\xff"\n'), 2, "not UTF-8 (line 2)"),
    "config huge": (_config(b"# " + b"x" * (2 << 20) + b"\n"), 2, "is over"),
    "config a list for text": (_config(b"organization = [1, 2]\n"), 2, "organization"),
    "base url bad ipv6": (_env("OPENAI_BASE_URL", "https://[::1"), 2, "OPENAI_BASE_URL"),
    "base url bad port": (_env("OPENAI_BASE_URL", "https://h:99999/v1"), 2, "OPENAI_BASE_URL"),
    "backoff factor below 1": (
        _env("ORCHESTRATOR_POLL_BACKOFF_FACTOR", "0.5", "reconcile", "--once"),
        2,
        "ORCHESTRATOR_POLL_BACKOFF_FACTOR must be at least 1",
    ),
    "heartbeat as long as the lease": (
        _env("ORCHESTRATOR_WORKER_HEARTBEAT_SECONDS", "120", "worker", "--once"),
        2,
        "must be less than ORCHESTRATOR_WORKER_LEASE_SECONDS",
    ),
    "concurrency absurd": (
        _env("ORCHESTRATOR_WORKER_CONCURRENCY", "1000000000"),
        2,
        "ORCHESTRATOR_WORKER_CONCURRENCY must be",
    ),
    "env var with a newline": (
        _env("ORCHESTRATOR_DATABASE_URL", "sqlite:///orchestrator.sqlite3\n"),
        2,
        "ORCHESTRATOR_DATABASE_URL holds control characters",
    ),
    "org id with a newline": (_env("OPENAI_ORG_ID", "org-1\nX: y"), 2, "OPENAI_ORG_ID"),
    "metadata not utf-8": (_argv("status", "--metadata", "team=\udcff"), 2, "--metadata"),
    "reason not utf-8": (_argv("cancel", "batch_good1", "--reason", "\udcff"), 2, "--reason"),
    "limit huge": (_argv("status", "--limit", "9" * 30), 2, "--limit"),
    "requester longer than its column": (
        _argv("cancel", "batch_good1", "--by", "x" * 300),
        2,
        "argument --by: expected at most 128 characters",
    ),
    "older-than huge": (
        _argv("cancel", "--older-than", "99999999999w", "--dry-run"),
        2,
        "too long",
    ),
    "created-after huge": (_argv("status", "--created-after", "99999999999d"), 2, "too long"),
    "unknown revision": (_argv("db", "upgrade", "--revision", "nonsense"), 2, "nonsense"),
    "empty revision": (_argv("db", "upgrade", "--revision", ""), 2, "--revision"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_careless_input_is_a_clear_error_never_a_traceback(
    cli_env: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    case: str,
) -> None:
    setup, code, named = CASES[case]
    argv = setup(monkeypatch, tmp_path)
    try:
        got = main(argv)
    except SystemExit as exc:  # argparse's own refusal: exit 2 with a usage line
        got = int(exc.code or 0)
    said = _said(capsys)
    assert (got, named in said) == (code, True), said


# --- passwords ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["config", "show"], ["healthcheck", "--api"]])
def test_a_base_url_with_credentials_is_refused_without_showing_the_password(
    cli_env: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://ops:{PASSWORD}@127.0.0.1:9/v1")
    assert main(command) == 2
    said = _said(capsys)
    assert "OPENAI_BASE_URL" in said and "Basic auth" in said
    assert PASSWORD not in said


@pytest.mark.parametrize(
    "url",
    [
        f"sqlite://ops:{PASSWORD}@dbhost/orchestrator.sqlite3",  # a host in a SQLite URL
        f"postgresql://ops:{PASSWORD}@[::1/orchestrator",  # does not parse
        f"postgresql://ops:{PASSWORD}@db:5432/orch\n",  # a newline
        f"postgresql://ops@[::1/orch?password={PASSWORD}",  # in the query (psycopg takes it)
        f"postgresql://ops@db:5432/orch?sslmode=require&PASSWORD={PASSWORD}&x\n",
    ],
)
def test_no_message_shows_the_database_password(
    cli_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", url)
    assert main(["status"]) == 2
    said = _said(capsys)
    assert "ORCHESTRATOR_DATABASE_URL" in said and PASSWORD not in said


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://ops:{PASSWORD}@db/orch",
        f"postgresql://ops@db/orch?password={PASSWORD}",  # psycopg takes it from the query too
    ],
)
def test_no_log_line_shows_the_database_password(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    settings = load_settings(environ={"ORCHESTRATOR_DATABASE_URL": url})
    for fmt in ("text", "json"):
        logs.configure("INFO", fmt, *settings.secrets())
        logging.getLogger("orchestrator.test").warning(
            "lost the database at %s", f"db (password {PASSWORD})", extra={"url": PASSWORD}
        )
    err = capsys.readouterr().err
    assert err.count("***") == 3 and PASSWORD not in err  # text message; JSON message, extra

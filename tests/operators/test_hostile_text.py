"""Text from outside reaches the terminal with its control characters spelled out.

Escape sequences in what the server sent (error messages, request ids, status
text, metadata, model names) and in ids listed by `sync` must not act on the
operator's terminal or forge log lines: `status`, `show`, `cancel --dry-run`,
`sync` and the text log show them as `\\x1b`, `\\u202e`, ... JSON output is
JSON-escaped and needs nothing more.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator import logs
from orchestrator.cli.main import main
from orchestrator.core.cancel_policy import Attempt, AttemptOutcome
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import Batch
from orchestrator.secret import Secret

from . import fleet as f
from .conftest import Run

HOSTILE = "\x1b]0;owned\x07\x1b[2J\x9b31m\u202eevil\u200b\r\nforged line"
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\u200b", "\r")  # none may reach the terminal
SHOWN = "\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\u202eevil\\u200b"
VICTIM = "batch_hostile1"


def _plant(db: Database, now: datetime) -> None:
    """A batch whose every server-given text is hostile, with a failed cancel attempt."""
    body = f.payload(
        VICTIM,
        "in_progress",
        created=now,
        model=f"gpt{HOSTILE}",
        endpoint=f"/v1/{HOSTILE}"[:128],
        metadata={f"team{HOSTILE}": f"ads{HOSTILE}"},
        errors={"data": [{"code": "bad", "message": HOSTILE}]},
    )
    f.observe(db, body, now)
    cancels = CancelStore(db)
    cancels.request([VICTIM], now=now, requested_by="eve", reason=HOSTILE)
    claims = cancels.claim_due("worker-1", now=now, limit=1, lease_seconds=60)
    failed = Attempt(
        AttemptOutcome.RETRY,
        started_at=now,
        finished_at=now,
        http_status=500,
        request_id=f"req{HOSTILE}"[:128],
        error=f"HTTP 500 {HOSTILE}",
        retry_at=now,
    )
    cancels.record_attempts("worker-1", [(claims[0], failed)])
    f.set_columns(db, VICTIM, status="in_progress\x1b[5m", last_error=f"poll: {HOSTILE}")


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["status", "--cancel-requested"],
        ["show", VICTIM],
        ["cancel", "--dry-run", VICTIM, f"batch_[blink]{HOSTILE}"],
        ["cancel", "--dry-run", "--model", f"gpt{HOSTILE}"],
    ],
)
def test_server_text_reaches_the_terminal_spelled_out(
    database: Database, fleet_now: datetime, run: Run, command: list[str]
) -> None:
    _plant(database, fleet_now)
    code, out, err = run(*command)
    assert code in (0, 1), err
    shown = out + err
    assert not [c for c in RAW if c in shown], shown
    assert "\\x1b" in shown
    assert "forged line" not in shown.split("\n")[0]  # no line of its own either
    assert not any(line.startswith("forged line") for line in shown.splitlines())


def test_status_json_is_json_escaped(database: Database, fleet_now: datetime, run: Run) -> None:
    _plant(database, fleet_now)
    code, out, _ = run("show", VICTIM, "--json")
    assert code == 0
    assert not [c for c in RAW if c in out]
    assert json.loads(out)["batch"]["model"] == f"gpt{HOSTILE}"  # kept as it came


def test_text_log_lines_spell_out_controls(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "text", Secret(""))
    log = logging.getLogger("orchestrator.test")
    try:
        raise RuntimeError(f"server said {HOSTILE}")
    except RuntimeError:
        log.exception("cancel failed: %s", HOSTILE, extra={"request_id": f"req{HOSTILE}"})
    err = capsys.readouterr().err
    assert not [c for c in RAW if c in err]
    assert f"cancel failed: {SHOWN}" in err
    assert f"request_id=req{SHOWN}" in err
    assert f"RuntimeError: server said {SHOWN}" in err  # the traceback's text too
    assert not any(line.startswith("forged line") for line in err.splitlines())


# --- sync -------------------------------------------------------------------------------

GOOD = "batch_listedfine"
BAD_IDS = (f"batch_{HOSTILE}", "../../etc/passwd", "x" * 200, 42)


def _batch(batch_id: Any) -> dict[str, Any]:
    return {"id": batch_id, "object": "batch", "status": "in_progress", "created_at": 1}


class _OnePage(BaseHTTPRequestHandler):
    """GET /v1/batches: one page holding a good batch and ids `cancel` would refuse."""

    def do_GET(self) -> None:
        page = {
            "object": "list",
            "data": [_batch(GOOD), *(_batch(bad) for bad in BAD_IDS)],
            "has_more": False,
        }
        body = json.dumps(page).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def listing(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OnePage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-listing")
    yield url
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_sync_stores_no_id_cancel_would_refuse(
    database: Database, run: Run, listing: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run("sync")
    assert code == 1  # done, and a person should look at what was skipped
    with database.transaction() as session:
        assert session.scalars(select(Batch.id)).all() == [GOOD]
    assert err.count("skipped a malformed batch") == len(BAD_IDS)
    assert "batch id" in err and "\\x1b" in err
    assert not [c for c in RAW if c in out + err]
    assert main(["--database-url", str(database.engine.url), "reconcile", "--once"]) in (0, 1)

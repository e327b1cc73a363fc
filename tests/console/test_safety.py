"""The console changes nothing, keeps its token to itself, and renders outside text inert."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError

from orchestrator.cli.console_commands import console_token
from orchestrator.cli.main import main
from orchestrator.console.guard import Guard, Message, Receive, Scope, Send, is_loopback
from orchestrator.db.database import Database
from orchestrator.db.models import Batch
from orchestrator.errors import ConfigError
from tests.operators import fleet as f
from tests.operators.conftest import Fleet

from .conftest import console_client

TOKEN = "s3cret-console-token-0123456789"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SCRIPT = "<script>window.__injected = 1</script>"
IMAGE = '<img src=x onerror="window.__injected = 2">'


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("path", ["/", "/batches", f"/batches/{f.IN_PROGRESS}", "/static/x"])
def test_only_get_and_head(shared_fleet: Fleet, method: str, path: str) -> None:
    with console_client(shared_fleet.url) as web:
        answer = web.request(method, path)
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "path", ["/", "/batches?status=nope", "/batches/nosuch", "/static/console.css"]
)
def test_every_answer_carries_the_security_headers(shared_fleet: Fleet, path: str) -> None:
    with console_client(shared_fleet.url) as web:
        answer = web.get(path)
        head = web.head("/")
    assert head.status_code == 200
    for headers in (answer.headers, head.headers):
        assert headers["content-security-policy"] == CSP
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"
        assert headers["server-timing"].startswith("app;dur=")


def test_pages_have_no_inline_script_or_style(shared_fleet: Fleet) -> None:
    with console_client(shared_fleet.url) as web:
        for path in ("/", "/batches", f"/batches/{f.CANCELLED}", "/batches/nosuch"):
            html = web.get(path).text
            assert "<script>" not in html and "<style" not in html and " style=" not in html
            assert " on" not in html.replace(' onerror="window', "")  # no event attributes


def test_without_a_token_only_a_loopback_host_is_answered(shared_fleet: Fleet) -> None:
    with console_client(shared_fleet.url, base_url="http://evil.example:8470") as web:
        assert web.get("/").status_code == 421
    with console_client(shared_fleet.url, base_url="http://localhost:8470") as web:
        assert web.get("/").status_code == 200


def test_a_name_that_only_begins_like_a_loopback_address_is_refused(
    shared_fleet: Fleet,
) -> None:
    """DNS rebinding: the attacker's page at 127.0.0.1.attacker.example, its name
    re-bound to 127.0.0.1, sends that name as its Host."""
    for base_url in ("http://127.0.0.1.attacker.example:8470", "http://127.evil.example"):
        with console_client(shared_fleet.url, base_url=base_url) as web:
            assert web.get("/batches").status_code == 421, base_url
    with console_client(shared_fleet.url, base_url="http://[::1]:8470") as web:
        assert web.get("/").status_code == 200


def test_loopback_is_localhost_or_an_exact_loopback_ip_literal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for host in ("localhost", "127.0.0.1", "127.0.0.2", "::1", "[::1]"):
        assert is_loopback(host), host
    for host in (
        "127.0.0.1.attacker.example",
        "127.evil.example",
        "127.1",
        "[127.0.0.1]",
        "localhost.example",
        "0.0.0.0",
        "10.0.0.5",
    ):
        assert not is_loopback(host), host
    # The command's own check is the same rule: off loopback, a token first.
    monkeypatch.delenv("ORCHESTRATOR_CONSOLE_TOKEN", raising=False)
    assert console_token("127.0.0.1") is None
    with pytest.raises(ConfigError, match="ORCHESTRATOR_CONSOLE_TOKEN"):
        console_token("127.0.0.1.attacker.example")


def test_a_token_is_required_once_set(shared_fleet: Fleet) -> None:
    with console_client(shared_fleet.url, token=TOKEN, base_url="http://10.0.0.5:8470") as web:
        assert web.get("/").status_code == 401
        assert (
            web.get("/", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code
            == 401
        )
        assert web.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert web.get("/batches?token=wrong").status_code == 401
        signed_in = web.get(f"/batches?status=failed&token={TOKEN}")
        assert signed_in.status_code == 303
        assert signed_in.headers["location"] == "/batches?status=failed"  # token dropped
        assert "HttpOnly" in signed_in.headers["set-cookie"]
        assert "SameSite=Strict" in signed_in.headers["set-cookie"]
        page = web.get("/batches?status=failed")  # the cookie now carries it
        assert page.status_code == 200 and f.FAILED in page.text
        assert TOKEN not in page.text


def test_signing_in_keeps_every_other_pair_in_order(shared_fleet: Fleet) -> None:
    with console_client(shared_fleet.url, token=TOKEN, base_url="http://10.0.0.5:8470") as web:
        signed_in = web.get(f"/batches?status=failed&model=m&status=expired&token={TOKEN}")
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/batches?status=failed&model=m&status=expired"


@pytest.mark.parametrize("raw_path", [b"//evil.example/", b"///evil.example/", b"/\\evil.example/"])
def test_signing_in_never_redirects_to_another_site(raw_path: bytes) -> None:
    """The path as sent (a test client would tidy it): a Location beginning // (or
    /\\, which browsers read alike) names another host."""

    async def never_reached(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("the guard answers a sign-in itself")

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": raw_path.decode(),
        "raw_path": raw_path,
        "query_string": f"token={TOKEN}".encode(),
        "headers": [(b"host", b"10.0.0.5:8470")],
    }
    asyncio.run(Guard(never_reached, token=TOKEN)(scope, receive, send))
    assert sent[0]["status"] == 303
    assert dict(sent[0]["headers"])[b"location"] == b"/evil.example/"


def test_off_loopback_without_a_token_the_command_refuses(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], shared_fleet: Fleet
) -> None:
    monkeypatch.delenv("ORCHESTRATOR_CONSOLE_TOKEN", raising=False)
    code = main(["--database-url", shared_fleet.url, "console", "--host", "0.0.0.0"])
    assert code == 2
    assert "ORCHESTRATOR_CONSOLE_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("ORCHESTRATOR_CONSOLE_TOKEN", "short")
    code = main(["--database-url", shared_fleet.url, "console", "--host", "0.0.0.0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "16 to 256 characters" in err and "short" not in err


def test_the_console_database_handle_refuses_writes(db_url: str) -> None:
    reader = Database.connect(db_url, read_only=True)
    try:
        with pytest.raises(DBAPIError, match=r"(?i)read-only|readonly"):  # noqa: SIM117
            with reader.transaction() as session:
                session.execute(update(Batch).values(polls=1))
    finally:
        reader.dispose()


def test_injected_markup_in_outside_text_is_shown_as_text(fleet: Database) -> None:
    """Metadata, error texts and details reach pages only escaped."""
    evil = {"note": SCRIPT, "x": IMAGE, IMAGE: "key"}
    with fleet.transaction() as session:
        session.execute(
            update(Batch)
            .where(Batch.id == f.FAILED)
            .values(metadata_=evil, last_error=f"HTTP 500 {SCRIPT}", model=IMAGE)
        )
    url = fleet.engine.url.render_as_string(hide_password=False)
    with console_client(url) as web:
        for path in ("/", "/batches", f"/batches/{f.FAILED}", f"/batches?model={IMAGE}"):
            html = web.get(path).text
            assert SCRIPT not in html and IMAGE not in html
        html = web.get(f"/batches/{f.FAILED}").text
        assert "&lt;script&gt;window.__injected = 1&lt;/script&gt;" in html
        assert "&lt;img src=x onerror=&#34;window.__injected = 2&#34;&gt;" in html


def test_importing_the_command_line_does_not_import_the_web_stack() -> None:
    code = (
        "import sys, orchestrator.cli.main; "
        "loaded = [m for m in ('starlette', 'jinja2', 'uvicorn') if m in sys.modules]; "
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr

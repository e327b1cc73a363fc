"""`orchestrator webhooks` as a process, its settings, and where the secret never goes."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from orchestrator.cli.main import main

from .signing import OTHER_SECRET, SECRET, event_body, signed_headers


@pytest.fixture(autouse=True)
def no_machine_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ORCHESTRATOR_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    monkeypatch.delenv("OPENAI_WEBHOOK_SECRET", raising=False)


@pytest.mark.parametrize("flags", [[], ["--json"]])
def test_config_show_says_set_and_never_shows_the_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    monkeypatch.setenv("OPENAI_WEBHOOK_SECRET", f"{SECRET},{OTHER_SECRET}")
    assert main(["config", "show", *flags]) == 0
    out = capsys.readouterr().out
    assert "webhook_secret" in out and "*** (set)" in out
    assert SECRET[6:20] not in out and OTHER_SECRET[6:20] not in out


def test_a_bad_secret_is_named_by_position_never_echoed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_WEBHOOK_SECRET", f"{SECRET},whsec_%%not-base64%%")
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err
    assert "OPENAI_WEBHOOK_SECRET: secret 2" in err and "not-base64" not in err


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("ORCHESTRATOR_WEBHOOK_UNKNOWN_BATCHES", "maybe", "ignore or adopt"),
        ("ORCHESTRATOR_WEBHOOK_PORT", "70000", "TCP port"),
        ("ORCHESTRATOR_WEBHOOK_MAX_BODY_BYTES", "0", "ORCHESTRATOR_WEBHOOK_MAX_BODY_BYTES must be"),
    ],
)
def test_bad_receiver_settings_are_usage_errors(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    named: str,
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err
    assert name in err and named in err


def test_the_secret_in_a_config_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "orchestrator.toml"
    path.write_text(f"[webhook]\nsecret = '{SECRET}'\n")
    monkeypatch.setenv("ORCHESTRATOR_CONFIG", str(path))
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err
    assert "OPENAI_WEBHOOK_SECRET only" in err and SECRET not in err


def test_without_a_secret_the_receiver_does_not_start(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", sqlite_url)
    assert main(["webhooks", "--port", "0"]) == 2
    assert "OPENAI_WEBHOOK_SECRET is not set" in capsys.readouterr().err


def test_help_does_not_load_the_receiver() -> None:
    code = (
        "import sys; from orchestrator.cli.main import build_parser; build_parser(); "
        "print('orchestrator.processes.webhooks' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_process_serves_logs_json_without_the_secret_and_stops_on_sigterm(
    sqlite_url: str,
) -> None:
    env = {
        **os.environ,
        "ORCHESTRATOR_DATABASE_URL": sqlite_url,
        "OPENAI_WEBHOOK_SECRET": SECRET,
        "ORCHESTRATOR_LOG_FORMAT": "json",
    }
    command = [sys.executable, "-m", "orchestrator", "webhooks", "--port", "0"]
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stderr is not None
            started = proc.stderr.readline()  # blocks until the first log line: the URL
            match = re.search(r"http://127\.0\.0\.1:(\d+)/webhooks/openai", started)
            assert match, started
            url = match.group(0)
            body = event_body("batch_z")
            good = httpx.post(url, content=body, headers=signed_headers(body), timeout=10)
            forged_headers = signed_headers(body, secret=OTHER_SECRET)
            forged = httpx.post(url, content=body, headers=forged_headers, timeout=10)
            assert (good.status_code, forged.status_code) == (200, 400)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            logs = started + proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert '"action": "webhook"' in logs and '"action": "webhook_refused"' in logs
    assert SECRET[6:] not in logs and OTHER_SECRET[6:] not in logs


def test_the_secret_is_scrubbed_from_any_log_line(caplog: pytest.LogCaptureFixture) -> None:
    from orchestrator import logs
    from orchestrator.secret import Secret
    from orchestrator.settings import Settings

    settings = Settings(webhook_secret=Secret(f"{SECRET},{OTHER_SECRET}"))
    logs.configure("INFO", "text", *settings.secrets())
    handler = logging.getLogger().handlers[0]
    record = logging.LogRecord(
        "t", logging.INFO, "", 0, f"oops {OTHER_SECRET} {SECRET}", None, None
    )
    assert handler.filter(record)  # runs every filter, the scrubbing ones included
    assert SECRET not in record.getMessage() and OTHER_SECRET not in record.getMessage()

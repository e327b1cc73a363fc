"""`orchestrator console` as a person starts it: a process that says where it listens."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.operators import fleet as f
from tests.operators.conftest import Fleet

TOKEN = "a-long-enough-console-token-42"


@contextmanager
def console_process(url: str, *args: str, token: str | None = None) -> Iterator[tuple[str, str]]:
    """The running console's (address, first lines said); stopped with SIGTERM."""
    env = {k: v for k, v in os.environ.items() if k != "ORCHESTRATOR_CONSOLE_TOKEN"}
    if token is not None:
        env["ORCHESTRATOR_CONSOLE_TOKEN"] = token
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "--database-url", url, "console", *args],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stderr is not None
    try:
        said = process.stderr.readline()  # printed once the socket listens
        if token is not None:
            said += process.stderr.readline()
        found = re.search(r"(http://\S+/)", said)
        assert found, said
        yield found.group(1), said
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            rest = process.communicate(timeout=20)[1]
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, rest
    if token is not None:
        assert token not in said + rest


def test_it_serves_the_pages_and_stops_cleanly_on_sigterm(shared_fleet: Fleet) -> None:
    with console_process(shared_fleet.url, "--port", "0") as (address, said):
        assert address.startswith("http://127.0.0.1:") and "read-only" in said
        page = httpx.get(f"{address}batches?status=cancelling", timeout=10)
        assert page.status_code == 200 and f.SLOW_CANCEL in page.text
        assert httpx.post(address, timeout=10).status_code == 405


def test_with_a_token_it_says_so_and_never_shows_it(shared_fleet: Fleet) -> None:
    with console_process(shared_fleet.url, "--port", "0", token=TOKEN) as (address, said):
        assert "a token is required (ORCHESTRATOR_CONSOLE_TOKEN)" in said
        assert httpx.get(address, timeout=10).status_code == 401
        page = httpx.get(address, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert page.status_code == 200 and TOKEN not in page.text
        signed_in = httpx.get(f"{address}?token={TOKEN}", timeout=10)
        assert signed_in.status_code == 303

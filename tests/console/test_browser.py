"""The console in real headless Chromium (Debian's `chromium`, driven by Playwright).

A simulator and the reconciler share a manual clock; the console serves the same
SQLite file from a real uvicorn on loopback. The test opens the overview, filters
to cancelling batches, opens one, moves the clock and runs the reconciler, and
watches the open page turn `cancelled` by itself; then downloads the results and
compares them with the database, and checks that markup injected through a
batch's metadata stays text. Screenshots of every page go to a temporary folder
(or ORCHESTRATOR_CONSOLE_SCREENSHOTS), from which docs/console/ was taken.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from orchestrator.clock import ManualClock, utcnow
from orchestrator.console.serve import bind, server, url_of
from orchestrator.core.retry_policy import RetryPolicy
from orchestrator.db.cancels import CancelStore
from orchestrator.db.database import Database
from orchestrator.db.models import BatchResult
from orchestrator.processes.worker import CancelWorker, WorkerConfig
from tests.integration.conftest import ReconcilerFactory, Sim, track
from tests.operators.fleet import populate

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCRIPT = "<script>window.__injected = 1</script>"
IMAGE = '<img src=x onerror="window.__injected = 2">'
WAIT_MS = 15_000

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and os.environ.get("CI") != "true",
    reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it",
)


@pytest.fixture
def database(sqlite_url: str) -> Iterator[Database]:
    db = Database.connect(sqlite_url)
    yield db
    db.dispose()


@pytest.fixture
def console_url(sqlite_url: str) -> Iterator[str]:
    """A real console (uvicorn, loopback, a port of its own) over the test database."""
    reader = Database.connect(sqlite_url, pool_size=2, read_only=True)
    sock = bind("127.0.0.1", 0)
    web = server(reader, token=None, refresh_ms=250)
    thread = threading.Thread(target=web.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()  # the socket already listens: requests wait in its backlog
    try:
        yield url_of(sock).rstrip("/")
    finally:
        web.should_exit = True
        thread.join(timeout=10)
        sock.close()
        reader.dispose()


@pytest.fixture
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("ORCHESTRATOR_CONSOLE_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("console-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def stored_rows(database: Database, batch_id: str) -> list[tuple[object, ...]]:
    with database.transaction() as session:
        return [
            tuple(row)
            for row in session.execute(
                select(
                    BatchResult.custom_id,
                    BatchResult.file_kind,
                    BatchResult.status_code,
                    BatchResult.error_code,
                    BatchResult.request_id,
                )
                .where(BatchResult.batch_id == batch_id)
                .order_by(BatchResult.custom_id)
            )
        ]


def test_watch_a_cancel_land_download_and_stay_safe(
    database: Database,
    sim: Sim,
    clock: ManualClock,
    reconciler: ReconcilerFactory,
    console_url: str,
    shots: Path,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    target = sim.simulator.create_batch(40, metadata={"team": "console"})
    evil = sim.simulator.create_batch(3, metadata={"note": SCRIPT, "x": IMAGE})
    track(database, clock, target, evil)
    clock.advance(30)
    CancelStore(database).request(
        [target], now=clock.now(), requested_by="operator", reason="browser test"
    )
    CancelWorker(  # the real worker sends it: accepted, cancelling
        CancelStore(database),
        sim.async_client(clock),
        config=WorkerConfig(concurrency=2, idle_seconds=0.01),
        policy=RetryPolicy(max_in_process_attempts=2, max_in_process_wait=1.0),
        clock=clock,
        owner="browser-test-worker",
    ).run(threading.Event(), once=True)
    r = reconciler()
    r.run_once()  # the reconciler sees the target cancelling
    # The operators' varied fleet beside them, for a fuller picture. Added after the
    # worker ran: it holds a 401 pause, which stops every worker sending.
    populate(database, utcnow())

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(
            accept_downloads=True, viewport={"width": 1360, "height": 900}
        )
        page = context.new_page()
        said: list[str] = []
        page.on("console", lambda message: said.append(message.text))
        page.on("pageerror", lambda error: said.append(str(error)))

        page.goto(f"{console_url}/")
        expect(page.locator("#by-status")).to_contain_text("cancelling")
        expect(page.locator("#paused-banner")).to_be_visible()
        page.screenshot(path=str(shots / "overview.png"), full_page=True)

        page.goto(f"{console_url}/batches")
        page.locator("input[name=status][value=cancelling]").check()
        page.locator("#apply").click()
        expect(page).to_have_url(f"{console_url}/batches?status=cancelling&sort=newest&limit=50")
        listed = page.locator("#batch-list a.id")
        expect(listed.filter(has_text=target)).to_have_count(1)
        expect(listed.filter(has_text=evil)).to_have_count(0)
        page.screenshot(path=str(shots / "batches.png"), full_page=True)

        listed.filter(has_text=target).click()
        expect(page.locator("#batch-status")).to_have_text("cancelling")
        page.evaluate("window.__sameDocument = true")

        clock.advance(10)
        r.run_once()  # the reconciler sees it cancelled and harvests its results
        expect(page.locator("#batch-status")).to_have_text("cancelled", timeout=WAIT_MS)
        expect(page.locator("#cancel-outcome")).to_have_text("cancelled")
        stored = stored_rows(database, target)
        expect(page.locator("#results-stored")).to_have_text(str(len(stored)))
        assert page.evaluate("window.__sameDocument") is True  # refreshed in place, no reload
        page.screenshot(path=str(shots / "batch.png"), full_page=True)

        with page.expect_download() as csv_download:
            page.locator("#download-csv").click()
        rows = list(csv.DictReader(io.StringIO(Path(csv_download.value.path()).read_text())))
        with page.expect_download() as jsonl_download:
            page.locator("#download-jsonl").click()
        lines = Path(jsonl_download.value.path()).read_bytes().splitlines()
        assert 0 < len(stored) <= 40
        assert [
            (r["custom_id"], r["file_kind"], int(r["status_code"]) if r["status_code"] else None)
            for r in rows
        ] == [(c, k, s) for c, k, s, _e, _q in stored]
        assert [
            (d["custom_id"], d["file_kind"], d["status_code"], d["error_code"], d["request_id"])
            for d in map(orjson.loads, lines)
        ] == stored

        page.goto(f"{console_url}/batches/{evil}")
        metadata = page.locator("#metadata")
        expect(metadata).to_contain_text(SCRIPT)  # shown as the text it is
        expect(metadata).to_contain_text(IMAGE)
        assert page.locator("img").count() == 0
        # Once the live part has been replaced by a refresh (innerHTML: the way injected
        # markup would get in), the flag still stays unset.
        page.evaluate("document.querySelector('#metadata').dataset.before = 'refresh'")
        expect(page.locator("#metadata[data-before]")).to_have_count(0, timeout=WAIT_MS)
        expect(metadata).to_contain_text(SCRIPT)
        assert page.evaluate("window.__injected") is None
        assert not [text for text in said if "__injected" in text], said
        browser.close()

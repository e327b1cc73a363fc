"""What the console's pages show, and that its filters and downloads are the command line's."""

from __future__ import annotations

import re
from datetime import datetime
from html import unescape

import orjson
import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from orchestrator.db import browse
from orchestrator.db.database import Database
from orchestrator.db.models import Batch
from tests.operators import fleet as f
from tests.operators.conftest import Run, as_json

from .conftest import console_client


def ids_listed(html: str) -> list[str]:
    table = html.split('id="batch-list"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<a class="id" href="/batches/[^"]+">([^<]+)</a>', table)


def test_overview_counts_banners_results_and_latest_events(web: TestClient) -> None:
    page = web.get("/")
    assert page.status_code == 200
    html = page.text
    counts = html.split('id="by-status"', 1)[1].split("</table>", 1)[0]
    assert re.search(r"cancelling</span></a></td><td class=\"num\">1<", counts)
    assert 'id="paused-banner"' in html and "HTTP 401" in html
    assert 'id="overdue-banner"' in html and "1 batch overdue" in html
    assert '<span class="number" id="results-recorded">9</span>' in html  # 3 + 5 + 1
    outcomes = html.split('id="by-cancel-outcome"', 1)[1].split("</table>", 1)[0]
    assert "too_late:completed" in outcomes and "cancelled" in outcomes
    events = html.split('id="latest-events"', 1)[1]
    assert f.VALIDATING in events and "cancel_requested" in events


@pytest.mark.parametrize(
    ("query", "flags"),
    [
        ("status=cancelling", ["--status", "cancelling"]),
        ("status=in_progress,unobserved", ["--status", "in_progress", "--status", "unobserved"]),
        ("overdue=1", ["--overdue"]),
        ("cancel_requested=1", ["--cancel-requested"]),
        ("metadata=team%3Dads", ["--metadata", "team=ads"]),
        # no batch near the edge of 100 minutes (SQLite keeps whole seconds)
        ("created_after=100m", ["--created-after", "100m"]),
        ("newer_than=100m", ["--newer-than", "100m"]),
        ("created_before=100m", ["--created-before", "100m"]),
        ("newer_than=3h&older_than=100m", ["--newer-than", "3h", "--older-than", "100m"]),
        ("status=failed&metadata=team%3Dads", ["--status", "failed", "--metadata", "team=ads"]),
    ],
)
def test_the_list_selects_what_the_command_line_selects(
    web: TestClient, ask: Run, query: str, flags: list[str]
) -> None:
    code, out, _ = ask("status", "--json", *flags)
    assert code == 0
    expected = [row["id"] for row in as_json(out)["batches"]]
    assert expected, "a filter that selects nothing proves little"
    page = web.get(f"/batches?{query}")
    assert page.status_code == 200
    assert ids_listed(page.text) == expected  # same batches, same (newest first) order
    assert f"{len(expected)} batch" in page.text


def test_cancel_state_and_outcome_filters(web: TestClient) -> None:
    assert ids_listed(web.get("/batches?cancel_state=pending").text) == [f.IN_PROGRESS]
    listed = ids_listed(web.get("/batches?cancel_outcome=too_late:completed").text)
    assert listed == [f.TOO_LATE]


@pytest.mark.parametrize("sort", ["newest", "oldest", "changed", "id"])
def test_pages_walk_every_batch_once_in_order(web: TestClient, sort: str) -> None:
    seen: list[str] = []
    url: str | None = f"/batches?sort={sort}&limit=3"
    for _ in range(10):
        assert url is not None
        html = web.get(url).text
        seen += ids_listed(html)
        found = re.search(r'id="next-page" href="([^"]+)"', html)
        url = unescape(found.group(1)) if found else None
        if url is None:
            break
    assert sorted(seen) == sorted(f.ALL)
    if sort == "id":
        assert seen == sorted(f.ALL)
    if sort == "newest":
        assert seen[0] == f.VALIDATING and seen[-1] == f.EXPIRED  # created 2m and 25h ago


def test_a_shared_link_carries_the_whole_filter(web: TestClient) -> None:
    html = web.get("/batches?status=in_progress&status=cancelling&sort=oldest&limit=1").text
    found = re.search(r'id="next-page" href="([^"]+)"', html)
    assert found is not None
    link = unescape(found.group(1))
    assert "status=in_progress" in link and "status=cancelling" in link
    assert "sort=oldest" in link and "limit=1" in link and "after=" in link


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("status=running", "status: 'running' is not one of"),
        ("sort=random", "sort: 'random' is not one of"),
        ("created_after=yesterday", "created_after: 'yesterday' is neither a duration"),
        ("since=2h", "since: gone; it counted from when we began tracking"),
        ("older_than=-5", "older_than: '-5' is not a duration"),
        ("metadata=team", "metadata: 'team': expected KEY=VALUE"),
        ("limit=0", "limit: expected a whole number from 1 to 500"),
        ("after=bm90IGEgY3Vyc29y", "is not one this console made"),
        ("overdue=maybe", "overdue: expected 1"),
        ("limit=%C2%B2", "limit: expected a whole number from 1 to 500"),  # str.isdigit("²")
        (
            "created_after=0001-01-01T00:00%2B01:00",
            "created_after: '0001-01-01T00:00+01:00' is out",
        ),
        (
            "created_before=9999-12-31T23:00-05:00",
            "created_before: '9999-12-31T23:00-05:00' is out",
        ),
        pytest.param("metadata=a%3Db&" * 1000, "metadata: at most 20 values", id="metadata*1000"),
        ("model=gpt%00", "model: a value holds a control character"),
        ("endpoint=%00", "endpoint: a value holds a control character"),
        ("cancel_outcome=a%0Ab", "cancel_outcome: a value holds a control character"),
        ("metadata=team%3Dsearch%00", "metadata: a value holds a control character"),
    ],
)
def test_a_bad_filter_is_a_400_naming_it(web: TestClient, query: str, names: str) -> None:
    page = web.get(f"/batches?{query}")
    assert page.status_code == 400
    assert names in unescape(page.text)


def test_batch_page_shows_timeline_cancel_attempts_files_and_preview(web: TestClient) -> None:
    html = web.get(f"/batches/{f.IN_PROGRESS}").text
    attempts = html.split('id="attempts"', 1)[1].split("</table>", 1)[0]
    assert '<td class="num">429</td>' in attempts and "req_rate1" in attempts
    assert "wrong prompt" in html and "alice" in html
    timeline = html.split('id="timeline"', 1)[1].split("</ol>", 1)[0]
    moments = ("created", "in progress", "tracking began", "cancel requested")
    positions = [timeline.index(w) for w in moments]
    assert positions == sorted(positions)

    html = web.get(f"/batches/{f.CANCELLED}").text
    files = html.split('id="files"', 1)[1].split("</table>", 1)[0]
    assert "file-out-cancelled1" in files and "file-err-cancelled1" in files and "done" in files
    preview = html.split('id="preview"', 1)[1].split("</table>", 1)[0]
    assert "req-001" in preview and "answer 1" in preview and "batch_cancelled" in preview
    assert "first 5 of 5" in html

    html = web.get(f"/batches/{f.EXPIRED}").text
    assert "missing" in html and "No such File object" in html


def test_unknown_batch_is_404(web: TestClient) -> None:
    assert web.get("/batches/batch_nosuch").status_code == 404
    assert web.get("/batches/batch_nosuch/results.csv").status_code == 404
    assert web.get(f"/batches/{f.CANCELLED}/results.xml").status_code == 404


@pytest.mark.postgres
def test_an_id_that_cannot_be_one_is_404_without_asking_the_database(pg_url: str) -> None:
    """PostgreSQL refuses a NUL in a query outright (SQLite would just find nothing)."""
    with console_client(pg_url) as web:
        assert web.get("/batches/batch_%00x").status_code == 404
        assert web.get("/batches/batch_%00x/results.csv").status_code == 404


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_download_is_what_the_results_command_writes(web: TestClient, ask: Run, fmt: str) -> None:
    code, out, _ = ask("results", f.CANCELLED, "-o", fmt)
    assert code == 0
    download = web.get(f"/batches/{f.CANCELLED}/results.{fmt}")
    assert download.status_code == 200
    assert "attachment" in download.headers["content-disposition"]
    assert download.content.decode() == out
    if fmt == "jsonl":
        assert len([orjson.loads(line) for line in out.splitlines()]) == 5


def test_partial_is_the_live_block_alone(web: TestClient) -> None:
    full = web.get(f"/batches/{f.SLOW_CANCEL}")
    partial = web.get(f"/batches/{f.SLOW_CANCEL}", headers={"X-Console-Partial": "1"})
    assert partial.status_code == 200
    assert "<html" not in partial.text and 'id="batch-status"' in partial.text
    # The same block as the full page (up to its "as of", which moves with the clock).
    assert partial.text.split("<small>as of")[0].strip() in full.text
    assert "X-Console-Partial" in partial.headers["vary"]


def test_an_empty_database_has_friendly_pages(database: Database) -> None:
    url = database.engine.url.render_as_string(hide_password=False)
    with console_client(url) as client:
        assert "No batch is tracked yet." in client.get("/").text
        assert "No batch matches." in client.get("/batches").text


def test_a_large_match_is_counted_up_to_the_cap(
    web: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(browse, "COUNT_CAP", 3)
    html = web.get("/batches?limit=2").text
    assert "More than 3 batches match" in html
    assert 'class="chip"' not in html  # no per-status counts from a part of the matches
    assert len(ids_listed(html)) == 2
    exact = web.get("/batches?status=in_progress,cancelling").text  # 2 in the fleet
    assert "2 batches match" in exact and 'class="chip"' in exact


def test_a_pruned_batch_says_its_rows_are_gone(fleet: Database, fleet_now: datetime) -> None:
    with fleet.transaction() as session:
        session.execute(
            update(Batch).where(Batch.id == f.CANCELLED).values(results_pruned_at=fleet_now)
        )
    url = fleet.engine.url.render_as_string(hide_password=False)
    with console_client(url) as client:
        html = client.get(f"/batches/{f.CANCELLED}").text
    assert "result rows were pruned" in html.lower() and "result rows pruned" in html

"""Every ```sql block of docs/operators.md, run against a populated database of each kind.

The queries are read out of the markdown, so the documentation cannot drift from
the schema: a renamed column fails here. Each must return rows on the test fleet
(it has an example of everything the queries look for), and the ones whose
answer is obvious from the fleet are checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import text

from . import fleet as f
from .conftest import Fleet

DOC = Path(__file__).resolve().parents[2] / "docs" / "operators.md"
SQL_BLOCK = re.compile(r"^```sql\n(.*?)^```", re.DOTALL | re.MULTILINE)
ONLY = re.compile(r"^-- (postgresql|sqlite) only\n")

# A distinctive piece of a query -> the batch ids (first column) it must return.
EXPECTED = {
    "WHERE batch_id = 'batch_abc123';": [f.IN_PROGRESS],
    "seconds_in_status > 600": [f.SLOW_CANCEL],
    "WHERE overdue = 1": [f.SLOW_CANCEL],
    "outcome LIKE 'too_late:%'": [f.TOO_LATE],
    "too_late = 1": [f.TOO_LATE],
    "state <> 'done'": [f.EXPIRED],
    "WHERE state = 'pending'": [f.IN_PROGRESS],
    "= 'search'": [f.IN_PROGRESS, f.SLOW_CANCEL],
    "FROM file_deletions WHERE state = 'failed'": [f.CANCELLED],
}


def documented_queries() -> list[str]:
    return [block.strip() for block in SQL_BLOCK.findall(DOC.read_text())]


def test_the_document_has_its_queries() -> None:
    assert len(documented_queries()) >= 14


@pytest.mark.parametrize(
    "query", documented_queries(), ids=lambda q: re.sub(r"\W+", "_", q.splitlines()[-1])[:40]
)
def test_each_documented_query_runs_and_answers(shared_fleet: Fleet, query: str) -> None:
    fleet = shared_fleet.db
    only = ONLY.match(query)
    if only and only.group(1) != fleet.engine.dialect.name:
        pytest.skip(f"{only.group(1)} only")
    with fleet.engine.connect() as connection:
        rows = connection.execute(text(query.rstrip(";"))).all()
        connection.rollback()
    assert rows, "documented queries must find something in the test fleet"
    for marker, expected in EXPECTED.items():
        if marker in query:
            assert sorted(row[0] for row in rows) == sorted(expected), marker


def test_errors_by_code_and_attempts_per_batch_count_right(shared_fleet: Fleet) -> None:
    fleet = shared_fleet.db
    queries = {q.splitlines()[0]: q for q in documented_queries()}
    errors = next(q for q in queries.values() if "GROUP BY error_code" in q)
    attempts = next(q for q in queries.values() if "FROM cancel_attempts" in q)
    with fleet.engine.connect() as connection:
        assert [tuple(r) for r in connection.execute(text(errors.rstrip(";")))] == [
            ("batch_cancelled", 3, 1)
        ]
        by_batch = {r[0]: (r[1], r[2]) for r in connection.execute(text(attempts.rstrip(";")))}
        connection.rollback()
    assert by_batch == {f.IN_PROGRESS: (1, 1), f.SLOW_CANCEL: (1, 0)}

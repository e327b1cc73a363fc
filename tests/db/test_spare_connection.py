"""``Database.spare_connection``: one more connection only when the pool can give it at
once and keep a quarter of its connections (at least one) free; never a wait."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from orchestrator.db.database import Database


@pytest.mark.postgres
def test_a_spare_is_given_while_a_quarter_of_the_pool_stays_free(pg_url: str) -> None:
    database = Database.connect(pg_url, pool_size=4)  # at most 8 open, 2 kept free
    try:
        with ExitStack() as held:
            taken = 0
            while True:
                spare = held.enter_context(database.spare_connection())
                if spare is None:
                    break
                taken += 1
                assert taken <= 8
            assert taken == 6  # a seventh would leave 1 free, not 2
            assert database.engine.pool.checkedout() == 6  # type: ignore[attr-defined]
            with database.transaction():  # the rest of the process is not kept waiting
                pass
        assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        with database.spare_connection() as again:
            assert again is not None  # given back: there is room again
    finally:
        database.dispose()


@pytest.mark.postgres
def test_a_pool_of_one_has_no_spare(pg_url: str) -> None:
    database = Database.connect(pg_url, pool_size=1)  # at most 2 open, 1 kept free
    try:
        with database.held_connection(), database.spare_connection() as spare:
            assert spare is None
    finally:
        database.dispose()


def test_sqlite_has_no_spare(sqlite_url: str) -> None:
    database = Database.connect(sqlite_url)
    try:
        with database.spare_connection() as spare:
            assert spare is None
    finally:
        database.dispose()

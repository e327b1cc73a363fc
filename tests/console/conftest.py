"""The console in process (Starlette's TestClient) over the operators' test fleet."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from starlette.testclient import TestClient

from orchestrator.console.app import create_app
from orchestrator.db.database import Database
from tests.integration.conftest import clock, reconciler, sim  # noqa: F401 (fixtures)
from tests.operators.conftest import (  # noqa: F401 (fixtures)
    Fleet,
    ask,
    fleet,
    fleet_now,
    shared_fleet,
    stable_terminal,
)

LOCAL = "http://127.0.0.1:8470"


@contextmanager
def console_client(
    url: str, *, token: str | None = None, base_url: str = LOCAL
) -> Iterator[TestClient]:
    db = Database.connect(url, pool_size=2, read_only=True)
    try:
        app = create_app(db, token=token)
        with TestClient(app, base_url=base_url, follow_redirects=False) as client:
            yield client
    finally:
        db.dispose()


@pytest.fixture(scope="module")
def web(shared_fleet: Fleet) -> Iterator[TestClient]:  # noqa: F811
    """The console over the shared fleet (read only, so shared by the module's tests)."""
    with console_client(shared_fleet.url) as client:
        yield client

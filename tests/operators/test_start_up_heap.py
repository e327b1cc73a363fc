"""The long-running commands take their start-up heap out of the cyclic collector's
scans (processes/heap.py): a full collection, the one at exit included, walks only what
the work made (0.1 s of each `worker --once` run); and they collect their young
generation less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from orchestrator.cli.main import main
from orchestrator.processes.heap import YOUNG_COLLECTION_THRESHOLD
from orchestrator.simulator import DEFAULT_API_KEY


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()  # whatever an earlier test froze: this one starts from none
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()  # and leaves none: the test process's heap stays collectable
    gc.set_threshold(*threshold)  # and collected as often as before


@pytest.mark.parametrize("command", ["worker", "reconcile"])
def test_a_long_running_command_freezes_its_start_up_heap(
    command: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, unfrozen: None
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("OPENAI_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9")  # nothing to ask: never used
    assert gc.get_freeze_count() == 0
    assert main([command, "--once"]) == 0
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD


def test_a_one_off_command_leaves_the_heap_alone(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, unfrozen: None
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", sqlite_url)
    before = gc.get_threshold()
    assert main(["status"]) == 0
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before

"""Lanes (processes/lanes.py): work in turn on each lane's connection, one piece at a
time per lane, in the caller's thread when there is one lane; and the rule that keeps
two chunks in flight from waiting on each other (processes/ingest.py ``_InFlight``)."""

from __future__ import annotations

import concurrent.futures
import threading
from concurrent.futures import Future
from typing import Any

import pytest

from orchestrator.db.results import Chunk, ChunkCounts
from orchestrator.processes import ingest
from orchestrator.processes.lanes import Lanes


def test_work_goes_to_the_lanes_in_turn_each_on_a_thread_of_its_own() -> None:
    me = threading.get_ident()
    with Lanes(["a", "b"]) as lanes:
        done = [lanes.run(n, lambda on: (on, threading.get_ident())) for n in range(4)]
        results = [f.result() for f in done]
    assert [on for on, _ in results] == ["a", "b", "a", "b"]
    assert results[0][1] == results[2][1] != results[1][1] == results[3][1]
    assert me not in {thread for _, thread in results}


def test_one_lane_runs_its_work_at_once_in_the_callers_thread() -> None:
    me = threading.get_ident()
    with Lanes(["only"]) as lanes:
        done = lanes.run(7, lambda on: (on, threading.get_ident()))
        assert done.done() and done.result() == ("only", me)

        def fails(on: str) -> None:
            raise LookupError(on)

        failed = lanes.run(8, fails)  # read from the future, as a thread's would be
        assert isinstance(failed.exception(), LookupError)


def test_a_lane_takes_its_next_work_only_when_the_last_has_ended() -> None:
    release = threading.Event()
    order: list[str] = []

    def first(on: str) -> None:
        release.wait()
        order.append("first")

    def third(on: str) -> None:
        order.append("third")

    with Lanes(["a", "b"]) as lanes:
        held = lanes.run(0, first)
        queued = lanes.run(2, third)  # lane a again: behind ``first``
        lanes.run(1, lambda on: order.append("second")).result()  # lane b is free
        assert not held.done() and not queued.done()
        release.set()
        queued.result()
    assert order == ["second", "first", "third"]


COUNTS = ChunkCounts(inserted=3, duplicates=0, malformed=0)


def _flight(before: ingest._InFlight | None = None) -> ingest._InFlight:
    chunk = Chunk(batch_id="b", file_id="f", from_line=0, to_line=0, rows=[], errors=[])
    return ingest._InFlight(chunk, before)


def _row(custom_id: str) -> tuple[Any, ...]:
    return ("b", custom_id, None, "f", "output", 1, 200, None, b"{}", None, None)


def test_a_custom_id_the_chunk_before_holds_waits_for_that_chunk_to_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sent before the earlier chunk commits, the later chunk's row would hold an index
    entry the earlier one may still have to insert: each would wait on the other."""
    earlier = _flight()
    earlier.future = Future()
    earlier.custom_ids = {"c1", "c2"}
    later = _flight(earlier)
    waited: list[str] = []

    def wait(fs: list[Future[Any]]) -> None:
        assert fs == [earlier.future]
        waited.append("waited")
        earlier.future.set_result(COUNTS)  # the earlier chunk commits

    monkeypatch.setattr(concurrent.futures, "wait", wait)
    sent = []
    for row in later.guarded(iter([_row("c9"), _row("c2"), _row("c1"), _row("c8")])):
        sent.append((row[1], list(waited)))
    # c9 goes at once; c2 only once the earlier chunk ended; then nothing waits again
    assert sent == [("c9", []), ("c2", ["waited"]), ("c1", ["waited"]), ("c8", ["waited"])]
    assert later.custom_ids == {"c9", "c2", "c1", "c8"}


def test_the_first_chunk_waits_for_nothing() -> None:
    first = _flight()
    assert [r[1] for r in first.guarded(iter([_row("c1"), _row("c1")]))] == ["c1", "c1"]
    first.after_the_one_before()  # returns at once


def test_a_chunk_moves_the_checkpoint_only_after_the_one_before_committed() -> None:
    earlier = _flight()
    earlier.future = Future()
    later = _flight(earlier)
    earlier.future.set_result(COUNTS)
    later.after_the_one_before()
    failed = _flight()
    failed.future = Future()
    failed.future.set_exception(RuntimeError("its connection was lost"))
    with pytest.raises(ingest._Abandoned, match="from line 0 did not commit"):
        _flight(failed).after_the_one_before()

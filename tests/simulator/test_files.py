"""File generation: deterministic, byte-identical, every custom_id exactly once."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import orjson

from orchestrator.simulator.files import (
    CACHE_MAX_BYTES,
    BatchSnapshot,
    FailureIndex,
    FileContent,
    Outcome,
    batch_file_lines,
    request_fails,
)
from orchestrator.simulator.scenario import Scenario, Timeline, phase_at

T0 = 1_767_225_600.0


def snapshot(total: int, *, cancel_after: float | None = None, ratio: float = 0.2) -> BatchSnapshot:
    tl = Timeline(
        created_at=T0,
        total=total,
        scenario=Scenario(validating_s=0, running_s=100, failed_request_ratio=ratio),
    )
    if cancel_after is not None:
        tl = dataclasses.replace(tl, cancel_at=T0 + cancel_after)
    phase = phase_at(tl, T0 + 1000)
    assert phase.terminal
    return BatchSnapshot(
        batch_id="batch_test",
        model="gpt-test",
        endpoint="/v1/chat/completions",
        timeline=tl,
        phase=phase,
        failures=FailureIndex("batch_test", total, ratio),
        custom_id=lambda i: f"cid-{i}",
    )


def parse(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines() if line]


def test_failure_index_matches_per_request_hash() -> None:
    index = FailureIndex("batch_x", 500, 0.3)
    flags = [request_fails("batch_x", i, 0.3) for i in range(500)]
    assert [index.failed(i) for i in range(500)] == flags
    assert index.failures_before(500) == sum(flags)
    assert 100 < sum(flags) < 200  # roughly 30 %
    assert FailureIndex("b", 10, 0.0).failures_before(10) == 0
    assert FailureIndex("b", 10, 1.0).failures_before(7) == 7


def test_cancelled_files_cover_every_custom_id_once() -> None:
    snap = snapshot(200, cancel_after=50)
    out = parse(
        FileContent(
            lines=batch_file_lines(snap, "output", "f1", shuffle=True, body_bytes=300)
        ).read()
    )
    err = parse(
        FileContent(
            lines=batch_file_lines(snap, "error", "f2", shuffle=True, body_bytes=300)
        ).read()
    )
    ids = [line["custom_id"] for line in out + err]
    assert sorted(ids) == sorted(f"cid-{i}" for i in range(200))
    assert len(out) + len(err) == 200
    assert snap.line_counts() == (len(out), len(err))
    assert all(line["error"] is None and line["response"]["status_code"] == 200 for line in out)
    codes = {
        line["error"]["code"] if line["error"] else line["response"]["status_code"] for line in err
    }
    assert codes == {"batch_cancelled", 400}
    cancelled = [line for line in err if line["error"]]
    assert len(cancelled) == 100  # requests 100..199 never ran (cancel at half time)


def test_outcomes_agree_with_files() -> None:
    snap = snapshot(50, cancel_after=30)
    out = parse(
        FileContent(lines=batch_file_lines(snap, "output", "f", shuffle=False, body_bytes=0)).read()
    )
    assert {line["custom_id"] for line in out} == {
        f"cid-{i}" for i in range(50) if snap.outcome(i) is Outcome.OUTPUT
    }


def test_repeated_generation_is_byte_identical_and_size_is_exact() -> None:
    snap = snapshot(3000, ratio=0.1)
    lines = batch_file_lines(snap, "output", "file-big", shuffle=True, body_bytes=600)
    content = FileContent(lines=lines)
    size = content.size()
    assert size > CACHE_MAX_BYTES  # large: streamed, not cached
    first = content.read()
    second = b"".join(content.chunks(chunk_bytes=1000))
    assert first == second
    assert len(first) == size
    fresh = FileContent(
        lines=batch_file_lines(snap, "output", "file-big", shuffle=True, body_bytes=600)
    )
    assert fresh.read() == first


def test_shuffle_is_deterministic_per_file_id() -> None:
    snap = snapshot(100, ratio=0.0)

    def order(file_id: str, shuffle: bool) -> list[object]:
        data = FileContent(
            lines=batch_file_lines(snap, "output", file_id, shuffle=shuffle, body_bytes=0)
        )
        return [line["custom_id"] for line in parse(data.read())]

    assert order("a", False) == [f"cid-{i}" for i in range(100)]
    assert order("a", True) == order("a", True)
    assert order("a", True) != order("a", False)


def test_body_bytes_sets_the_size_of_each_response_body() -> None:
    snap = snapshot(20, ratio=0.0)
    for target in (1000, 2000):
        data = FileContent(
            lines=batch_file_lines(snap, "output", "f", shuffle=False, body_bytes=target)
        )
        for line in parse(data.read()):
            body = orjson.dumps(line["response"]["body"])
            assert abs(len(body) - target) < 20


def test_small_content_is_served_from_memory() -> None:
    calls = 0

    def lines() -> Iterator[bytes]:
        nonlocal calls
        calls += 1
        yield b'{"a":1}\n'

    content = FileContent(lines=lines)
    assert content.size() == 8
    assert content.read() == content.read() == b'{"a":1}\n'
    assert calls == 1

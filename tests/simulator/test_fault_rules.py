"""Fault rules on their own: parsing, matching, counting down, probability."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.simulator.faults import (
    FaultBook,
    FaultRule,
    fault_error,
    fault_headers,
    load_faults,
    rules_from_json,
)


def test_from_dict_reads_every_field() -> None:
    rule = FaultRule.from_dict(
        {
            "kind": "status",
            "endpoint": "cancel",
            "batch_id": "batch_1",
            "status": 429,
            "retry_after": 7,
            "retry_after_ms": 1500,
            "should_retry": False,
            "times": 3,
        }
    )
    assert rule == FaultRule(
        kind="status",
        endpoint="cancel",
        batch_id="batch_1",
        status=429,
        retry_after="7",
        retry_after_ms="1500",
        should_retry=False,
        times=3,
    )
    assert fault_headers(rule) == [
        ("retry-after", "7"),
        ("retry-after-ms", "1500"),
        ("x-should-retry", "false"),
    ]
    error = fault_error(rule)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "rate_limit_exceeded"


def test_probability_rules_default_to_unlimited() -> None:
    assert FaultRule.from_dict({"kind": "drop_before", "probability": 0.5}).times is None
    assert FaultRule.from_dict({"kind": "drop_before"}).times == 1
    assert FaultRule.from_dict({"kind": "html", "times": None}).times is None


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "explode"},
        {"kind": "status", "endpoint": "delete_everything"},
        {"kind": "status", "status": 99},
        {"kind": "status", "times": 0},
        {"kind": "status", "probability": 1.5},
        {"kind": "status", "colour": "red"},
        {"kind": "status", "should_retry": "yes"},
        {"kind": "slow", "delay_s": "long"},
        {"endpoint": "cancel"},
    ],
)
def test_invalid_rules_are_rejected(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FaultRule.from_dict(data)


def test_rules_from_json_shapes(tmp_path: Path) -> None:
    one = {"kind": "status", "status": 503}
    assert len(rules_from_json(one)) == 1
    assert len(rules_from_json([one, one])) == 2
    assert len(rules_from_json({"faults": [one]})) == 1
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"faults": [one, {"kind": "drop_mid", "endpoint": "cancel"}]}))
    assert [rule.kind for rule in load_faults(path)] == ["status", "drop_mid"]
    with pytest.raises(ValueError):
        rules_from_json("status")


def test_matching_by_endpoint_and_ids() -> None:
    rule = FaultRule(kind="status", endpoint="retrieve", batch_id="batch_a")
    assert rule.matches("retrieve", "batch_a", None)
    assert not rule.matches("retrieve", "batch_b", None)
    assert not rule.matches("cancel", "batch_a", None)
    any_content = FaultRule(kind="truncate", endpoint="content")
    assert any_content.matches("content", None, "file-x")
    wildcard = FaultRule(kind="status", file_id="file-x")
    assert wildcard.matches("content", None, "file-x")
    assert not wildcard.matches("retrieve", "batch_a", None)


def test_times_counts_down_and_first_rule_wins() -> None:
    book = FaultBook(seed=1)
    book.add(FaultRule(kind="status", endpoint="cancel", times=2))
    book.add(FaultRule(kind="html", endpoint="*", times=None))
    picks = [book.pick("cancel", "b", None) for _ in range(4)]
    assert [rule.kind if rule else None for rule in picks] == ["status", "status", "html", "html"]
    assert book.active() == [
        {"kind": "html", "endpoint": "*", "delay_s": 0.0, "fraction": 0.5, "remaining": None}
    ]


def test_probability_is_seeded() -> None:
    def run(seed: int) -> list[bool]:
        book = FaultBook(seed)
        book.add(FaultRule(kind="status", probability=0.3, times=None))
        return [book.pick("retrieve", "b", None) is not None for _ in range(400)]

    first = run(42)
    assert first == run(42)
    assert 80 < sum(first) < 160

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from orchestrator.core.retry_policy import (
    RetryPolicy,
    TransportFailure,
    Verdict,
    VerdictKind,
    classify,
    parse_retry_after,
)

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
POLICY = RetryPolicy()


# -- backoff -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retries_taken", "expected"),
    [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (50, 8.0), (10_000, 8.0)],
)
def test_backoff_sequence_without_jitter(retries_taken: int, expected: float) -> None:
    assert POLICY.backoff(retries_taken, 0.0) == expected


@pytest.mark.parametrize("retries_taken", [0, 1, 2, 3, 4, 5, 20])
@pytest.mark.parametrize("u", [0.0, 0.25, 0.5, 0.999999])
def test_backoff_jitter_stays_within_75_to_100_percent(retries_taken: int, u: float) -> None:
    base = min(0.5 * 2**retries_taken, 8.0)
    delay = POLICY.backoff(retries_taken, u)
    assert 0.75 * base < delay <= base
    assert delay == pytest.approx(base * (1 - 0.25 * u))


def test_backoff_negative_retries_treated_as_zero() -> None:
    assert POLICY.backoff(-3, 0.0) == 0.5


@pytest.mark.parametrize("u", [-0.1, 1.0, 2.0, math.nan])
def test_jitter_draw_out_of_range_is_refused(u: float) -> None:
    with pytest.raises(ValueError, match="jitter draw"):
        POLICY.backoff(0, u)


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [(0, 5.0), (1, 5.0), (2, 10.0), (3, 20.0), (6, 160.0), (8, 640.0), (9, 900.0), (99, 900.0)],
)
def test_durable_backoff_sequence(attempts: int, expected: float) -> None:
    assert POLICY.durable_backoff(attempts, 0.0) == expected


def test_durable_backoff_is_jittered() -> None:
    assert POLICY.durable_backoff(1, 0.5) == pytest.approx(5.0 * 0.875)
    assert POLICY.durable_backoff(50, 0.999) > 900.0 * 0.75


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_delay": 0},
        {"max_delay": -1.0},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"max_in_process_attempts": 0},
        {"max_in_process_wait": -1.0},
        {"durable_max": math.inf},
        {"max_retry_after": math.nan},
    ],
)
def test_policy_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


# -- Retry-After ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After-Ms": "250.5"}, 0.2505),
        ({"retry-after": "7"}, 7.0),
        ({"Retry-After": "2.5"}, 2.5),
        ({"retry-after": " 30 "}, 30.0),
        ({"retry-after-ms": "1000", "retry-after": "99"}, 1.0),  # ms wins
        ({"retry-after": "Thu, 01 Jan 2026 12:00:30 GMT"}, 30.0),
        ({"retry-after": "Thu, 01 Jan 2026 13:00:00 GMT"}, 3600.0),
        ({"retry-after": "Thu, 01 Jan 2026 12:00:30 -0000"}, 30.0),
        # an unusable ms value falls through to retry-after
        ({"retry-after-ms": "soon", "retry-after": "4"}, 4.0),
        ({"retry-after-ms": "0", "retry-after": "4"}, 4.0),
    ],
)
def test_parse_retry_after_forms(headers: dict[str, str], expected: float) -> None:
    assert parse_retry_after(headers, NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"retry-after": ""},
        {"retry-after": "soon"},
        {"retry-after": "0"},
        {"retry-after": "-5"},
        {"retry-after": "inf"},
        {"retry-after": "nan"},
        {"retry-after": "1e400"},
        {"retry-after-ms": "-10"},
        {"retry-after-ms": "nan"},
        {"retry-after-ms": "inf"},
        {"retry-after": "Thu, 01 Jan 2026 11:59:00 GMT"},  # in the past
        {"retry-after": "Thu, 01 Jan 2026 12:00:00 GMT"},  # now: zero
        {"retry-after": "Fri, 31 Dec 99999 23:59:59 GMT"},  # overflowing year
        {"retry-after": "Mon, 99 Foo 2026 25:61:61 GMT"},
    ],
)
def test_parse_retry_after_bad_values(headers: dict[str, str]) -> None:
    assert parse_retry_after(headers, NOW) is None


# -- classify ------------------------------------------------------------------

OK, RETRY, AUTH = VerdictKind.OK, VerdictKind.RETRY, VerdictKind.AUTH
NOT_FOUND, REJECTED = VerdictKind.NOT_FOUND, VerdictKind.REJECTED


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, OK),
        (201, OK),
        (204, OK),
        (301, REJECTED),
        (400, REJECTED),
        (401, AUTH),
        (403, AUTH),
        (404, NOT_FOUND),
        (408, RETRY),
        (409, RETRY),
        (410, REJECTED),
        (422, REJECTED),
        (429, RETRY),
        (500, RETRY),
        (502, RETRY),
        (503, RETRY),
        (504, RETRY),
        (599, RETRY),
    ],
)
def test_classify_status(status: int, kind: VerdictKind) -> None:
    verdict = classify(status, {}, NOW)
    assert verdict.kind is kind
    assert str(status) in verdict.reason
    assert verdict.retry_after is None
    assert verdict.retryable is (kind is RETRY)


@pytest.mark.parametrize(
    ("status", "flag", "kind"),
    [
        (500, "false", REJECTED),
        (503, "False", REJECTED),
        (429, "false", REJECTED),
        (409, "false", REJECTED),
        (400, "true", RETRY),
        (404, "true", RETRY),
        (401, "true", RETRY),
        (422, " TRUE ", RETRY),
        (401, "false", AUTH),  # already not retried: unchanged
        (404, "false", NOT_FOUND),
        (500, "true", RETRY),
        (400, "maybe", REJECTED),  # unknown value: status rules
        (503, "", RETRY),
        (200, "true", OK),  # never makes a 2xx an error
        (200, "false", OK),
    ],
)
def test_x_should_retry_overrides_status(status: int, flag: str, kind: VerdictKind) -> None:
    verdict = classify(status, {"X-Should-Retry": flag}, NOW)
    assert verdict.kind is kind


def test_x_should_retry_reason_is_named() -> None:
    assert "x-should-retry" in classify(500, {"x-should-retry": "false"}, NOW).reason


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (429, {"retry-after-ms": "1500"}, 1.5),
        (429, {"retry-after": "20"}, 20.0),
        (503, {"retry-after": "Thu, 01 Jan 2026 12:02:00 GMT"}, 120.0),
        (400, {"retry-after": "3"}, 3.0),  # carried even when not retried
        (429, {"retry-after": "garbage"}, None),
    ],
)
def test_classify_carries_retry_after(
    status: int, headers: dict[str, str], retry_after: float | None
) -> None:
    assert classify(status, headers, NOW).retry_after == retry_after


@pytest.mark.parametrize(
    ("status", "body_is_json", "kind"),
    [
        (200, False, RETRY),
        (200, True, OK),
        (502, False, RETRY),  # non-2xx HTML: by status
        (400, False, REJECTED),
        (404, False, NOT_FOUND),
    ],
)
def test_classify_body_not_json(status: int, body_is_json: bool, kind: VerdictKind) -> None:
    verdict = classify(status, {}, NOW, body_is_json=body_is_json)
    assert verdict.kind is kind
    if status == 200 and not body_is_json:
        assert "not JSON" in verdict.reason


@pytest.mark.parametrize("failure", list(TransportFailure))
def test_transport_failures_are_retried(failure: TransportFailure) -> None:
    verdict = classify(failure)
    assert verdict.kind is RETRY
    assert verdict.retry_after is None
    assert verdict.reason


# -- next_wait -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdict", "retries_taken", "u", "expected"),
    [
        (Verdict(RETRY, "r"), 0, 0.0, 0.5),
        (Verdict(RETRY, "r"), 2, 0.0, 2.0),
        (Verdict(RETRY, "r"), 2, 0.5, 1.75),
        (Verdict(RETRY, "r", retry_after=3.0), 0, 0.9, 3.0),  # server wins, no jitter
        (Verdict(RETRY, "r", retry_after=120.0), 5, 0.0, 120.0),
        (Verdict(RETRY, "r", retry_after=1e9), 0, 0.0, 86400.0),  # capped
    ],
)
def test_next_wait(verdict: Verdict, retries_taken: int, u: float, expected: float) -> None:
    assert POLICY.next_wait(verdict, retries_taken, u) == pytest.approx(expected)


def test_next_wait_respects_custom_cap() -> None:
    policy = RetryPolicy(max_retry_after=60.0)
    assert policy.next_wait(Verdict(RETRY, "r", retry_after=600.0), 0, 0.0) == 60.0

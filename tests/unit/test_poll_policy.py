from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.core.harvest import FileState, HarvestState, after_files
from orchestrator.core.poll_policy import PolledBatch, PollPolicy, plan_poll
from orchestrator.core.status import BatchStatus

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = BatchStatus
POLICY = PollPolicy(
    initial_seconds=5,
    backoff_factor=1.5,
    max_seconds=300,
    cancelling_max_seconds=30,
    error_max_seconds=600,
    overdue_cancelling_seconds=600,
    overdue_finalizing_seconds=3600,
    file_id_repolls=3,
    jitter=0.1,
)


def batch(status: BatchStatus | None, **kw: object) -> PolledBatch:
    values: dict[str, object] = {
        "status": status,
        "timestamps": {},
        "status_changed_at": T0,
        "output_file_id": None,
        "error_file_id": None,
        "terminal_polls": 0,
        "overdue_since": None,
    }
    values.update(kw)
    return PolledBatch(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "seconds_in_status", "expected"),
    [
        (S.IN_PROGRESS, 0, 5.0),
        (S.IN_PROGRESS, 10, 10.0),  # 5 + 0.5 * 10
        (S.IN_PROGRESS, 100, 55.0),
        (S.IN_PROGRESS, 10_000, 300.0),  # capped
        (S.VALIDATING, 0, 5.0),
        (S.FINALIZING, 1_000, 300.0),
        (S.CANCELLING, 0, 5.0),
        (S.CANCELLING, 40, 25.0),
        (S.CANCELLING, 10_000, 30.0),  # polled more often: that is when partial results appear
        (None, 0, 5.0),
    ],
)
def test_the_delay_grows_with_time_in_status_up_to_its_cap(
    status: BatchStatus | None, seconds_in_status: float, expected: float
) -> None:
    assert POLICY.delay(status, seconds_in_status=seconds_in_status, u=0.0) == expected


def test_the_delays_form_a_geometric_series() -> None:
    """Polling at each delay in turn reproduces initial * factor**k."""
    elapsed, delays = 0.0, []
    for _ in range(5):
        delay = POLICY.delay(S.IN_PROGRESS, seconds_in_status=elapsed, u=0.0)
        delays.append(delay)
        elapsed += delay
    assert delays == pytest.approx([5 * 1.5**k for k in range(5)])


def test_jitter_only_shortens_and_is_deterministic() -> None:
    assert POLICY.delay(S.IN_PROGRESS, seconds_in_status=0, u=0.5) == pytest.approx(4.75)
    assert POLICY.delay(S.IN_PROGRESS, seconds_in_status=0, u=0.999) > 4.5
    with pytest.raises(ValueError, match="jitter draw"):
        POLICY.delay(S.IN_PROGRESS, seconds_in_status=0, u=1.0)


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(1, 10.0), (2, 20.0), (3, 40.0), (6, 320.0), (7, 600.0), (50, 600.0), (10_000, 600.0)],
)
def test_failures_double_the_wait_up_to_the_error_cap(failures: int, expected: float) -> None:
    assert POLICY.error_delay(failures, status=S.IN_PROGRESS, u=0.0) == expected


def test_after_a_failure_we_never_poll_sooner_than_normal_and_honour_retry_after() -> None:
    long_in_status = POLICY.error_delay(1, status=S.IN_PROGRESS, seconds_in_status=10_000, u=0)
    assert long_in_status == 300.0
    assert POLICY.error_delay(1, status=S.IN_PROGRESS, retry_after=900.0, u=0.0) == 900.0
    assert POLICY.error_delay(3, status=S.IN_PROGRESS, retry_after=1.0, u=0.0) == 40.0


def test_overdue_is_measured_from_the_servers_timestamp_when_there_is_one() -> None:
    server_at = T0 - timedelta(minutes=30)
    stamps = {"cancelling_at": server_at}
    assert POLICY.overdue_at(S.CANCELLING, stamps, T0) == server_at + timedelta(seconds=600)
    assert POLICY.overdue_at(S.CANCELLING, {}, T0) == T0 + timedelta(seconds=600)
    assert POLICY.overdue_at(S.FINALIZING, {}, T0) == T0 + timedelta(seconds=3600)
    assert POLICY.overdue_at(S.IN_PROGRESS, {}, T0) is None
    assert POLICY.overdue_at(S.CANCELLING, {}, None) is None


def test_a_server_time_at_the_end_of_the_calendar_is_never_overdue() -> None:
    end = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)  # the parser's last second
    assert POLICY.overdue_at(S.CANCELLING, {"cancelling_at": end}, T0) is None
    assert POLICY.overdue_at(S.FINALIZING, {"finalizing_at": end}, T0) is None


def test_a_batch_turns_overdue_once_and_the_plan_says_so_once() -> None:
    before = plan_poll(POLICY, batch(S.CANCELLING), now=T0 + timedelta(seconds=599), u=0.0)
    assert before.overdue_since is None and not before.newly_overdue
    assert before.next_poll_at == T0 + timedelta(seconds=600)  # not late for the alert
    first = plan_poll(POLICY, batch(S.CANCELLING), now=T0 + timedelta(seconds=601), u=0.0)
    assert first.newly_overdue
    assert first.overdue_since == T0 + timedelta(seconds=600)
    again = plan_poll(
        POLICY,
        batch(S.CANCELLING, overdue_since=first.overdue_since),
        now=T0 + timedelta(seconds=700),
        u=0.0,
    )
    assert again.overdue_since == first.overdue_since and not again.newly_overdue
    assert again.next_poll_at == T0 + timedelta(seconds=730)  # polling goes on, capped at 30 s


def test_overdue_ends_when_the_batch_moves_on() -> None:
    plan = plan_poll(
        POLICY,
        batch(S.CANCELLED, output_file_id="file-o", overdue_since=T0),
        now=T0 + timedelta(hours=1),
        u=0.0,
    )
    assert plan.no_longer_overdue and plan.overdue_since is None


def test_finalizing_is_overdue_after_an_hour_by_its_server_timestamp() -> None:
    stamps = {"finalizing_at": T0 - timedelta(hours=2)}
    plan = plan_poll(POLICY, batch(S.FINALIZING, timestamps=stamps), now=T0, u=0.0)
    assert plan.overdue_since == T0 - timedelta(hours=1)


def test_a_terminal_batch_with_a_file_is_harvested_now_and_stays_due() -> None:
    plan = plan_poll(
        POLICY, batch(S.CANCELLED, error_file_id="file-e", terminal_polls=1), now=T0, u=0
    )
    assert plan.harvest and plan.harvest_state is HarvestState.PENDING
    assert plan.next_poll_at == T0  # a crash mid-download: the next holder resumes at once


@pytest.mark.parametrize("terminal_polls", [1, 2, 3, 4])
def test_a_terminal_batch_without_file_ids_is_polled_again_a_few_times(terminal_polls: int) -> None:
    plan = plan_poll(POLICY, batch(S.COMPLETED, terminal_polls=terminal_polls), now=T0, u=0.0)
    if terminal_polls <= 3:
        assert not plan.harvest and plan.harvest_state is HarvestState.PENDING
        assert plan.next_poll_at == T0 + timedelta(seconds=5)
    else:  # the first poll plus three more saw no file: the batch has no results
        assert plan.harvest_state is HarvestState.DONE and plan.next_poll_at is None


def test_only_a_batch_with_no_file_at_all_waits_for_ids() -> None:
    assert not POLICY.awaiting_file_ids(
        S.COMPLETED, output_file_id="file-o", error_file_id=None, terminal_polls=1
    )
    assert POLICY.awaiting_file_ids(
        S.FAILED, output_file_id=None, error_file_id=None, terminal_polls=1
    )
    assert not POLICY.awaiting_file_ids(
        S.IN_PROGRESS, output_file_id=None, error_file_id=None, terminal_polls=0
    )


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([], HarvestState.DONE),
        ([FileState.DONE, FileState.DONE], HarvestState.DONE),
        ([FileState.DONE, FileState.MISSING], HarvestState.MISSING),
        ([FileState.PENDING, FileState.MISSING], HarvestState.RETRYING),
        ([FileState.PENDING], HarvestState.RETRYING),
    ],
)
def test_the_harvest_state_follows_the_files(
    states: list[FileState], expected: HarvestState
) -> None:
    assert after_files(states) is expected


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="backoff_factor"):
        PollPolicy(backoff_factor=0.5)
    with pytest.raises(ValueError, match="jitter"):
        PollPolicy(jitter=1.0)


@pytest.mark.parametrize(
    ("status", "failures", "not_found", "seconds_tracked", "gives_up"),
    [
        (None, 3, True, 3600, True),  # never seen, failing for an hour, still 404
        (None, 9, True, 3599, False),  # within the hour: time to fix a key or project
        (None, 2, True, 86400, False),
        (None, 9, False, 86400, False),  # other failures never let a batch go
        (S.IN_PROGRESS, 9, True, 86400, False),  # seen once: a 404 is a key/project mix-up
    ],
)
def test_only_a_batch_never_seen_and_denied_for_an_hour_is_let_go(
    status: S | None, failures: int, not_found: bool, seconds_tracked: float, gives_up: bool
) -> None:
    verdict = POLICY.gives_up(
        status, failures=failures, not_found=not_found, seconds_tracked=seconds_tracked
    )
    assert verdict is gives_up


@pytest.mark.parametrize("status", [S.VALIDATING, S.IN_PROGRESS, S.FINALIZING, None])
def test_while_webhooks_flow_a_running_batch_waits_the_long_interval(
    status: BatchStatus | None,
) -> None:
    policy = PollPolicy(webhook_poll_seconds=3600, jitter=0.1)
    now = T0 + timedelta(seconds=20)
    flowing = plan_poll(policy, batch(status), now=now, u=0.5, webhooks=True)
    quiet = plan_poll(policy, batch(status), now=now, u=0.5, webhooks=False)
    assert flowing.next_poll_at == now + timedelta(seconds=3600 * 0.95)
    assert quiet.next_poll_at == now + timedelta(seconds=15 * 0.95)


def test_webhooks_never_delay_an_overdue_check_or_a_harvest() -> None:
    policy = PollPolicy(webhook_poll_seconds=3600, overdue_cancelling_seconds=600)
    now = T0 + timedelta(seconds=60)
    cancelling = batch(S.CANCELLING, timestamps={"cancelling_at": T0})
    plan = plan_poll(policy, cancelling, now=now, u=0.0, webhooks=True)
    assert plan.next_poll_at == T0 + timedelta(seconds=600)  # when it would turn overdue
    done = batch(S.COMPLETED, output_file_id="file-1", terminal_polls=1)
    assert plan_poll(policy, done, now=now, u=0.0, webhooks=True).next_poll_at == now

"""The rule of a long-running process's lifetime report (``processes/recent.py``): each
list keeps its most recent ``RECENT_KEPT`` entries and counts the older ones left out;
a pass's own summary keeps every entry."""

from __future__ import annotations

from orchestrator.cli.reconcile_commands import describe
from orchestrator.processes.pass_summary import LISTED, PassSummary
from orchestrator.processes.recent import RECENT_KEPT

PASSES = 3 * RECENT_KEPT


def one_pass(n: int) -> PassSummary:
    """What a pass that met one of everything adds, as ``Reconciler.run_once`` builds it."""
    summary = PassSummary(passes=1, claimed=1, polled=1, poll_failures=1)
    summary.merge(
        PassSummary(
            files_missing=[f"batch_{n}/output file-{n}: gone"],
            files_failed=[f"batch_{n}/error file-{n}: HTTP 500"],
            newly_overdue=[f"batch_{n}"],
            unknown=[f"batch_{n}"],
            cancels_closed={f"batch_{n}": "cancelled"},
            anomalies=[f"batch_{n}: odd"],
            errors=[f"batch_{n}: boom"],
        )
    )
    return summary


def test_the_lifetime_total_keeps_the_most_recent_of_each_list_and_exact_counts() -> None:
    total = PassSummary.lifetime()
    for n in range(PASSES):
        total.merge(one_pass(n))
    assert (total.passes, total.claimed, total.polled, total.poll_failures) == (PASSES,) * 4
    recent = [f"batch_{n}" for n in range(PASSES - RECENT_KEPT, PASSES)]
    assert list(total.cancels_closed) == recent
    assert total.unknown == total.newly_overdue == recent
    assert total.errors == [f"{b}: boom" for b in recent]
    for name in LISTED:
        assert len(getattr(total, name)) == RECENT_KEPT, name
    assert total.left_out == dict.fromkeys(LISTED, PASSES - RECENT_KEPT)

    text = describe(total)
    assert f"stopped polling {PASSES} batch(es)" in text
    assert f"and {PASSES - RECENT_KEPT} earlier (not listed)" in text
    assert f"most recent {RECENT_KEPT} entries each" in text


def test_a_cancel_closed_again_counts_as_recent() -> None:
    total = PassSummary.lifetime()
    total.merge(PassSummary(cancels_closed={"batch_old": "cancelled"}))
    for n in range(RECENT_KEPT - 1):
        total.merge(PassSummary(cancels_closed={f"batch_{n}": "cancelled"}))
    total.merge(PassSummary(cancels_closed={"batch_old": "too_late:completed"}))
    total.merge(PassSummary(cancels_closed={"batch_new": "cancelled"}))
    assert total.cancels_closed["batch_old"] == "too_late:completed"
    assert "batch_0" not in total.cancels_closed and total.left_out["cancels_closed"] == 1


def test_a_pass_keeps_every_entry() -> None:
    summary = PassSummary(passes=1)
    for n in range(PASSES):
        summary.merge(one_pass(n))
    assert len(summary.errors) == len(summary.cancels_closed) == PASSES
    assert sum(summary.left_out.values()) == 0
    assert "left out" not in describe(summary)

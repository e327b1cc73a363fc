"""What the client asks before every request it sends, and tells after a 429.

The client knows nothing of where the budget lives: the processes pass in one
shared through the database (processes/request_budget.py); without one, every
request goes at once, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from orchestrator.api.errors import ApiCall, ApiHeldBack
from orchestrator.api.limits import Interrupter
from orchestrator.api.retrying import Outcome
from orchestrator.core.retry_policy import RetryPolicy, Verdict, VerdictKind

__all__ = ["BudgetGate", "SendBudget"]


class SendBudget(Protocol):
    def take(self) -> float:
        """Take one request's token: 0 when it may be sent now, else the seconds to
        wait before asking again (nothing was taken). Thread-safe."""
        ...

    def take_nowait(self) -> float | None:
        """``take`` if it can answer without waiting on anything (a lock another
        thread holds, the database); None if it cannot."""
        ...

    def rate_limited(self, retry_after: float | None) -> None:
        """The server answered 429 (asking for ``retry_after`` seconds, if it said):
        hold back every process that shares the budget."""
        ...


class BudgetGate:
    """The client's side of a ``SendBudget``: before each attempt, take a token,
    waiting here only while the wait is short (the policy's ``max_in_process_wait``,
    as for retries); a longer one is a retryable outcome, persisted by the caller."""

    def __init__(
        self,
        budget: SendBudget,
        policy: RetryPolicy,
        sleep: Callable[[float], None],
        interrupter: Interrupter,
    ) -> None:
        self._budget = budget
        self._policy = policy
        self._sleep = sleep  # the client's: abort() ends it
        self._interrupter = interrupter

    def admit(self, call: ApiCall, number: int) -> Outcome[Any] | None:
        """None: send attempt ``number`` now (or stop: the caller's next check sees the
        abort); else the outcome of not sending it."""
        waited = 0.0
        while (wait := self._budget.take()) > 0:
            if waited + wait > self._policy.max_in_process_wait:
                return self._held(call, number, wait)
            self._sleep(wait)
            waited += wait
            if self._interrupter.aborted:
                return None
        return None

    async def admit_async(
        self, call: ApiCall, number: int, sleep: Callable[[float], Awaitable[None]]
    ) -> Outcome[Any] | None:
        """``admit`` for the async client. A token this process holds is taken on the
        loop; one that must come from the database is asked for in a thread: the event
        loop, with every send on it, never waits on a database round trip (or outage)."""
        waited = 0.0
        while (wait := await self._take_async()) > 0:
            if waited + wait > self._policy.max_in_process_wait:
                return self._held(call, number, wait)
            await sleep(wait)
            waited += wait
            if self._interrupter.aborted:
                return None
        return None

    async def _take_async(self) -> float:
        wait = self._budget.take_nowait()
        return wait if wait is not None else await asyncio.to_thread(self._budget.take)

    def _held(self, call: ApiCall, number: int, wait: float) -> Outcome[Any]:
        reason = "held back by the shared request budget"
        verdict = Verdict(VerdictKind.RETRY, reason, retry_after=wait)
        return Outcome(verdict, number, error=ApiHeldBack(call, wait=wait))

    async def answered_async(self, status: int, verdict: Verdict) -> None:
        """``answered`` for the async client: a 429's hold is written to the database
        from a thread, so the event loop, with every send on it, never waits on it."""
        if status == 429:
            await asyncio.to_thread(self.answered, status, verdict)

    def answered(self, status: int, verdict: Verdict) -> None:
        if status == 429:
            after = verdict.retry_after
            self._budget.rate_limited(
                None if after is None else self._policy.cap_retry_after(after)
            )

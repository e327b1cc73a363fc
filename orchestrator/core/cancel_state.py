"""A cancel request's states (the rules that move it: core/cancel_request.py).

In a module of its own, with nothing but the standard library, so that what only
names the states (the command line's selector flags, parsed at every start-up) does
not import the rules' state machine.
"""

from __future__ import annotations

from enum import StrEnum


class CancelState(StrEnum):
    PENDING = "pending"  # to be sent (again, after a retryable answer)
    ACCEPTED = "accepted"  # the server is cancelling the batch; waiting for it to end
    CLOSED = "closed"  # the batch ended; ``outcome`` says how (cancelled, too_late:...)
    FAILED = "failed"  # can never be sent: no such batch for this key, an invalid id
    WITHDRAWN = "withdrawn"  # taken back by a person before it was ever sent

    @property
    def rank(self) -> int:
        """How far along: a move never lowers it, except ``reopen``."""
        return _RANK[self]

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


# Every state's name, in the order a request goes through them: what selectors offer
# (`--cancel pending,failed`, the console's cancel_state). Derived, never repeated.
CANCEL_STATES: tuple[str, ...] = tuple(state.value for state in CancelState)

_RANK = {
    CancelState.PENDING: 0,
    CancelState.ACCEPTED: 1,
    CancelState.CLOSED: 2,
    CancelState.FAILED: 2,
    CancelState.WITHDRAWN: 2,
}
OPEN_STATES: frozenset[CancelState] = frozenset({CancelState.PENDING, CancelState.ACCEPTED})
FINAL_STATES: frozenset[CancelState] = frozenset(
    {CancelState.CLOSED, CancelState.FAILED, CancelState.WITHDRAWN}
)
# Asking again for one of these starts a fresh request (the old one is history, in
# cancel_attempts and batch_events); asking again for any other changes nothing.
REOPENABLE_STATES: frozenset[CancelState] = frozenset({CancelState.FAILED, CancelState.WITHDRAWN})

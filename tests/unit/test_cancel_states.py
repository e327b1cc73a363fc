"""The cancel request's states have one home, core/cancel_request.CancelState: what the
command line and the console offer is derived from it, so a state added there is
selectable everywhere (as `withdrawn` had to be added by hand before)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from orchestrator.cli.main import build_parser
from orchestrator.console import selectors
from orchestrator.core import status
from orchestrator.core.cancel_request import CANCEL_STATES, CancelState
from orchestrator.core.status import NO_CANCEL


def test_the_states_are_the_enum_in_its_order() -> None:
    assert tuple(state.value for state in CancelState) == CANCEL_STATES
    assert not hasattr(status, "CANCEL_STATES")  # no second list to forget


def test_cancel_selector_offers_every_state_on_every_command() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("status", "cancel", "results", "forget"):
        action = next(a for a in commands.choices[name]._actions if "--cancel" in a.option_strings)
        assert getattr(action.type, "choices", None) == (*CANCEL_STATES, NO_CANCEL), name
    # The console offers the same states, in the same order.
    with pytest.raises(selectors.BadSelector, match=", ".join(CANCEL_STATES)):
        selectors.parse_selection({"cancel_state": ["sent"]}, now=datetime.now(UTC))

"""What a long-running process does with the heap its start-up built."""

from __future__ import annotations

import gc

__all__ = ["settle_start_up_heap"]


def settle_start_up_heap() -> None:
    """Take what start-up built (modules, classes, wiring: it lives as long as the
    process) out of the cyclic collector's reach: every full collection, the one at
    exit included, would walk it again (0.1 s of each `worker --once` run)."""
    gc.freeze()

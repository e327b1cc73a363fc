"""What a long-running process does with the heap its start-up built."""

from __future__ import annotations

import gc

__all__ = ["settle_start_up_heap"]

# Container allocations between two young-generation collections (Python's default:
# 700). A worker's turn allocates thousands of short-lived dicts and tuples that die
# by reference counting, not as cycles; at 700 the collector ran many times a turn
# for nothing.
YOUNG_COLLECTION_THRESHOLD = 20_000


def settle_start_up_heap() -> None:
    """Take what start-up built (modules, classes, wiring: it lives as long as the
    process) out of the cyclic collector's reach: every full collection, the one at
    exit included, would walk it again (0.1 s of each `worker --once` run). Then let
    the young generation grow before it is collected (``YOUNG_COLLECTION_THRESHOLD``)."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)

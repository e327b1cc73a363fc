"""Turn SIGTERM/SIGINT into a stop event the loops watch."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)


def stop_on_signals(on_stop: Callable[[], None] | None = None) -> threading.Event:
    """First signal: stop gracefully. Second: stop now (KeyboardInterrupt).

    ``on_stop`` runs at the first signal, in the handler: the API client's ``abort``,
    so that calls in flight end now instead of waiting out a slow server."""
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.warning(
            "%s received: ending the calls in flight, recording what finished, then stopping",
            signal.Signals(signum).name,
            extra={"action": "stopping"},
        )
        stop.set()
        if on_stop is not None:
            on_stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop

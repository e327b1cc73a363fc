"""Turn SIGTERM/SIGINT into a stop event the loops watch."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


def stop_on_signals() -> threading.Event:
    """First signal: stop gracefully. Second: stop now (KeyboardInterrupt)."""
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.warning(
            "%s received: finishing in-flight work, then stopping",
            signal.Signals(signum).name,
            extra={"action": "stopping"},
        )
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop

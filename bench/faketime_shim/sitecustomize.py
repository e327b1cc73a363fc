"""Loaded (via PYTHONPATH) only into processes run under libfaketime by the tests and the soak.

libfaketime 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC=1 makes
clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), which ``time.sleep`` uses, fail
with EINVAL; without that variable it shifts the monotonic clock too, and
``threading`` waits then hang. So keep the monotonic clock true and sleep with
``select``, the same wait on the same clock. A workaround for the test tool, not
for the product: on a host whose wall clock is merely wrong, ``time.sleep`` works.
"""

import select
import time


def _sleep(seconds: float) -> None:
    select.select([], [], [], seconds)


time.sleep = _sleep  # type: ignore[assignment]

"""Live views: `status --watch` and `show --follow` redraw as the database changes.

Each turn reads the database once (a short read: it never blocks the processes
that write) and draws the frame when it differs from the last one, or, on a
terminal, each interval anyway (ages move on). On a terminal the frame is drawn
over the last one in place (home, each line then erase-to-end-of-line, then erase
below), so it does not flicker; piped into a file, each changed frame is appended.
Ctrl-C ends it with exit 0: stopping a watch is how it is meant to end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from orchestrator.cli.context import Context, Exit
from orchestrator.clock import utcnow

HOME, ERASE_LINE, ERASE_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"

# Reads the database and prints one frame to ctx.out; True when nothing more can
# change (the view may then end by itself).
Frame = Callable[[], bool]


def follow(ctx: Context, frame: Frame, interval: float, *, until_settled: bool = True) -> Exit:
    """Draw a `frame()` every `interval` seconds until Ctrl-C (exit 0), or, with
    `until_settled`, until the frame says nothing more can change."""
    out = ctx.out
    terminal = sys.stdout.isatty()
    last = None
    try:
        while True:
            with out.capture() as captured:
                settled = frame()
            body = captured.get()
            if terminal or body != last:
                stamp = f"every {interval:g}s, {utcnow():%H:%M:%SZ}; Ctrl-C to stop\n"
                _draw(stamp + body, terminal)
            last = body
            if settled and until_settled:
                sys.stdout.write("nothing more will change: stopped following\n")
                sys.stdout.flush()
                return Exit.OK
            time.sleep(interval)
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        sys.stdout.flush()
        return Exit.OK


def _draw(text: str, terminal: bool) -> None:
    if terminal:
        lines = text.rstrip("\n").split("\n")
        sys.stdout.write(HOME + "".join(f"{line}{ERASE_LINE}\n" for line in lines) + ERASE_BELOW)
    else:
        sys.stdout.write(text + "\n")
    sys.stdout.flush()

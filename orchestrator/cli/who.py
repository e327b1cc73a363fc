"""Who asks, when not told (`--by`, the Python API's `user=`): the OS user.

`getpass.getuser()` raises under a uid with no passwd entry and no USER/LOGNAME
(a container run as an arbitrary uid: the shipped Kubernetes manifests use 10001);
asking for a cancel must not crash on that, so the uid stands in for the name.
"""

from __future__ import annotations

import getpass
import os

from orchestrator.cli.cancel_args import MAX_BY


def os_user() -> str:
    """The OS user's name, or `uid:N` when it has none; at most MAX_BY characters (the
    width of the columns that keep it)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # KeyError up to Python 3.12, OSError from 3.13
        name = f"uid:{os.getuid()}"
    return name[:MAX_BY]

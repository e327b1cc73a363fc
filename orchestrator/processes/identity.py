"""Who a process is, for leases and for operators."""

from __future__ import annotations

import os
import socket
import uuid


def process_id(kind: str) -> str:
    """`worker@host:pid:abcd`: unique per process start, readable in the tables."""
    return f"{kind}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

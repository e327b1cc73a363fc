"""Serve the console with uvicorn on a socket bound here (so port 0 works and the
address printed is the one listening)."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import uvicorn

from orchestrator.console.app import create_app
from orchestrator.db.database import Database


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host.strip("[]"), port), family=family, backlog=128)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def server(db: Database, *, token: str | None, refresh_ms: int) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(db, token=token, refresh_ms=refresh_ms),
        # Our logging, not uvicorn's; and no access log: a URL can hold ?token=.
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
    )
    return uvicorn.Server(config)


def serve(
    db: Database,
    *,
    host: str,
    port: int,
    token: str | None,
    refresh_ms: int,
    announce: Callable[[str], None],
) -> None:
    """Listen on host:port until SIGINT or SIGTERM; ``announce`` gets the URL first."""
    sock = bind(host, port)
    with sock, _stop_is_not_an_error():
        announce(url_of(sock))
        server(db, token=token, refresh_ms=refresh_ms).run(sockets=[sock])


@contextlib.contextmanager
def _stop_is_not_an_error() -> Iterator[None]:
    """uvicorn stops cleanly on SIGINT/SIGTERM, then raises the signal again for the
    handler it found. Found here is one that ignores it: a stop asked for is exit 0."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.signal(s, lambda _signal, _frame: None) for s in stops}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)

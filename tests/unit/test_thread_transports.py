"""The sync client's pool per thread (``api/transport.py``): a thread that ended leaves
nothing behind. A reconciler runs for months, and its list walks start helper threads
for each walk (``processes/list_observation.py``): each used to leave its pool, and the
pool's kept-alive sockets, open for as long as the process ran."""

from __future__ import annotations

import gc
import threading
import weakref

import httpx

from orchestrator.api.transport import ThreadLocalTransport

THREADS = 50


class Pool(httpx.BaseTransport):
    def __init__(self) -> None:
        self.closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert not self.closed, "sent through a closed pool"
        return httpx.Response(200)

    def close(self) -> None:
        self.closed = True


def test_a_thread_that_ended_has_its_pool_closed_and_let_go() -> None:
    made: list[weakref.ref[Pool]] = []
    closed = 0

    class Counted(Pool):
        def close(self) -> None:
            nonlocal closed
            closed += 1
            super().close()

    def factory() -> Pool:
        pool = Counted()
        made.append(weakref.ref(pool))
        return pool

    transport = ThreadLocalTransport(factory)
    request = httpx.Request("GET", "https://api.test/v1/batches")

    def send() -> None:
        assert transport.handle_request(request).status_code == 200

    for _ in range(THREADS):  # threads that come and go, one after another
        thread = threading.Thread(target=send)
        thread.start()
        thread.join()
    send()  # this thread's pool, made now: the ended threads' are closed and let go
    send()  # and this thread keeps its own

    assert len(made) == THREADS + 1
    assert closed == THREADS  # their kept-alive sockets closed, not left open
    gc.collect()
    assert [ref for ref in made[:-1] if ref() is not None] == []  # nothing holds them
    mine = made[-1]()
    assert mine is not None and not mine.closed  # a live thread's pool is never closed
    transport.close()
    assert mine.closed


def test_a_live_threads_pool_is_kept_while_others_come_and_go() -> None:
    transport = ThreadLocalTransport(Pool)
    request = httpx.Request("GET", "https://api.test/v1/batches")
    go_on, sent = threading.Event(), threading.Event()
    results: list[int] = []

    def long_lived() -> None:
        results.append(transport.handle_request(request).status_code)
        sent.set()
        go_on.wait(30)
        results.append(transport.handle_request(request).status_code)  # its pool, open

    worker = threading.Thread(target=long_lived)
    worker.start()
    assert sent.wait(30)
    for _ in range(5):
        thread = threading.Thread(target=lambda: transport.handle_request(request))
        thread.start()
        thread.join()
    go_on.set()
    worker.join()
    assert results == [200, 200]
    transport.close()

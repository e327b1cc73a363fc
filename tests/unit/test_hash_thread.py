"""The download's SHA-256 made in a thread (processes/hash_thread.py): the same digest,
the pieces in their order, and no thread left behind whatever happens."""

from __future__ import annotations

import hashlib
import threading

import pytest

from orchestrator.core.line_splitter import LineSplitter
from orchestrator.processes.hash_thread import MAX_QUEUED, HashThread


def test_the_digest_is_hashlibs_of_the_pieces_in_their_order() -> None:
    pieces = [bytes([i]) * (i * 997 + 1) for i in range(3 * MAX_QUEUED)]  # more than fit queued
    with HashThread() as sha:
        for piece in pieces:
            sha.update(piece)
        assert sha.hexdigest() == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_the_splitter_hashes_through_it() -> None:
    data = b"".join(b'{"custom_id":"c%d"}\n' % i for i in range(5000))
    with HashThread() as sha:
        splitter = LineSplitter(sha256=sha)
        for i in range(0, len(data), 4096):
            splitter.feed(data[i : i + 4096])
        assert splitter.sha256 == hashlib.sha256(data).hexdigest()


def test_the_thread_ends_when_the_download_fails_and_takes_no_more() -> None:
    before = threading.active_count()
    with pytest.raises(RuntimeError), HashThread() as sha:
        sha.update(b"x" * 10_000)
        assert threading.active_count() == before + 1
        raise RuntimeError("the download was cut")
    assert threading.active_count() == before
    with pytest.raises(ValueError, match="closed"):
        sha.update(b"more")

"""A download's line feed: a stream that broke never reads as the file's end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.core.harvest import FileState
from orchestrator.core.line_splitter import Line, LineSplitter
from orchestrator.processes.ingest import IngestResult, _LineFeed


class Cut(Exception):
    """The connection dropped."""


def cut_after(*pieces: bytes) -> Iterator[bytes]:
    yield from pieces
    raise Cut("connection reset")


def feed_of(pieces: Iterator[bytes], skip: int = 0) -> _LineFeed:
    return _LineFeed(
        pieces, LineSplitter(), skip, IngestResult("file-x", "output", FileState.PENDING)
    )


def test_a_cut_stream_raises_again_for_the_next_reader_instead_of_ending() -> None:
    """A chunk whose COPY the server refused reads its lines again from the feed; the
    stream's generator has ended by raising, and ``next`` on it returns the default as
    if the file had ended there: the file would have been marked done, short."""
    feed = feed_of(cut_after(b'{"a": 1}\n{"a": 2}\n'))
    taken: list[Line] = []
    with pytest.raises(Cut):
        for part in feed.take(10):
            taken += part
    assert taken == [b'{"a": 1}', b'{"a": 2}']
    with pytest.raises(Cut):
        list(feed.take(10))
    assert feed.totals is None


def test_a_whole_stream_ends_with_its_totals() -> None:
    feed = feed_of(iter([b'{"a": 1}\n{"a"', b": 2}\n"]), skip=1)
    assert [line for part in feed.take(10) for line in part] == [b'{"a": 2}']
    assert feed.totals is not None and feed.totals.lines == 2
    assert list(feed.take(10)) == []

"""A download's line feed: a stream that broke never reads as the file's end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.core.harvest import FileState
from orchestrator.core.line_splitter import Line, LineSplitter, OverlongLine
from orchestrator.processes.ingest import IngestResult, _LineFeed


class Cut(Exception):
    """The connection dropped."""


def cut_after(*pieces: bytes) -> Iterator[bytes]:
    yield from pieces
    raise Cut("connection reset")


def feed_of(pieces: Iterator[bytes], skip: int = 0, *, end_checked: bool = True) -> _LineFeed:
    return _LineFeed(
        pieces,
        LineSplitter(),
        skip,
        IngestResult("file-x", "output", FileState.PENDING),
        end_checked=lambda: end_checked,
    )


def test_a_cut_stream_raises_again_for_the_next_reader_instead_of_ending() -> None:
    """A chunk whose COPY the server refused reads its lines again from the feed; the
    stream's generator has ended by raising, and ``next`` on it returns the default as
    if the file had ended there: the file would have been marked done, short."""
    feed = feed_of(cut_after(b'{"a": 1}\n{"a": 2}\n'))
    taken: list[Line] = []
    with pytest.raises(Cut):
        for part in feed.take(10, 1 << 20):
            taken += part
    assert taken == [b'{"a": 1}', b'{"a": 2}']
    with pytest.raises(Cut):
        list(feed.take(10, 1 << 20))
    assert feed.totals is None


def test_a_whole_stream_ends_with_its_totals() -> None:
    feed = feed_of(iter([b'{"a": 1}\n{"a"', b": 2}\n"]), skip=1)
    assert [line for part in feed.take(10, 1 << 20) for line in part] == [b'{"a": 2}']
    assert feed.totals is not None and feed.totals.lines == 2
    assert list(feed.take(10, 1 << 20)) == []


@pytest.mark.parametrize("end_checked", [True, False])
def test_the_totals_say_whether_the_download_vouched_for_its_end(end_checked: bool) -> None:
    """Asked once the pieces have ended (a compressed body's end is checked only then):
    a body that ended where its connection closed is stored, but not as surely whole."""
    asked: list[int] = []

    def pieces() -> Iterator[bytes]:
        yield b'{"a": 1}\n'
        assert not asked  # not before the stream has ended

    def vouched() -> bool:
        asked.append(1)
        return end_checked

    feed = _LineFeed(
        pieces(),
        LineSplitter(),
        0,
        IngestResult("file-x", "output", FileState.PENDING),
        end_checked=vouched,
    )
    assert [line for part in feed.take(10, 1 << 20) for line in part] == [b'{"a": 1}']
    assert feed.totals is not None and feed.totals.end_checked is end_checked
    assert asked == [1]


def test_a_chunk_of_long_lines_ends_at_its_bytes_not_its_line_count() -> None:
    """Lines are kept until their chunk commits: 2,000 of them near the 16 MiB line cap
    would be 32 GiB. A chunk ends once its lines hold ``max_bytes``."""
    line = b'{"pad": "' + b"x" * 1000 + b'"}\n'
    feed = feed_of(iter([line] * 10))
    first = [x for part in feed.take(100, 3000) for x in part]
    assert len(first) == 3 and feed.taken == 3 and not feed.ended
    rest = [x for part in feed.take(100, 1 << 20) for x in part]
    assert len(rest) == 7 and feed.ended


def test_an_overlong_line_counts_for_the_prefix_it_keeps() -> None:
    splitter = LineSplitter(100)  # lines over 100 bytes keep their first 100
    outcome = IngestResult("file-x", "output", FileState.PENDING)
    feed = _LineFeed(iter([b"y" * 300 + b"\n"] * 5), splitter, 0, outcome, end_checked=lambda: True)
    taken = [line for part in feed.take(100, 150) for line in part]
    assert len(taken) == 2 and all(isinstance(line, OverlongLine) for line in taken)

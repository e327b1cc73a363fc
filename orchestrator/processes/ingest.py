"""Download one output or error file and store every line, resumably.

The body is streamed (files reach hundreds of MB) and cut into lines as it
arrives; every ``chunk_lines`` lines (fewer when they reach ``chunk_bytes``) are
committed with the file's checkpoint in one transaction (see
``orchestrator.db.results``), their rows parsed and handed to the database as
the lines arrive (on PostgreSQL the chunk's COPY is
open meanwhile; a download cut inside a chunk rolls that chunk back whole).
The API has no Range requests, so a retry downloads from byte 0 again and skips
the lines the checkpoint already holds, while still hashing and counting every
byte.

A download cut short (``ApiTransportError``, or a last line without a newline
that does not parse, which is what a cut looks like when the server closed
cleanly) is retried up to ``download_attempts`` times. A 404 marks the file
``missing``; the batch's other file is harvested regardless. A line longer than
``max_line_bytes`` becomes a line error with its size (see line_splitter.py).
When the process stops (``ApiAborted``), what is committed stays committed.
A file is marked done only when its checkpoint reaches its last line: one with
fewer lines than earlier downloads stored changed on the server, and stays
pending with that reason.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from itertools import chain
from typing import cast

from orchestrator.api.client import BatchApiClient
from orchestrator.api.errors import (
    ApiAborted,
    ApiAuthError,
    ApiNotFoundError,
    ApiProtocolError,
    ApiStatusError,
    ApiTransportError,
    RetryLater,
)
from orchestrator.clock import Clock
from orchestrator.core.harvest import FileState
from orchestrator.core.line_splitter import (
    MAX_LINE_BYTES,
    READ_BYTES,
    Line,
    LineSplitter,
    OverlongLine,
)
from orchestrator.core.result_lines import Row, is_whole_json, iter_rows
from orchestrator.db.results import (
    Chunk,
    ChunkConnection,
    ChunkCounts,
    FileTotals,
    ResultStore,
)
from orchestrator.processes.hash_thread import HashThread
from orchestrator.processes.lanes import Lanes

__all__ = ["FileIngest", "IngestResult", "IngestSettings"]

log = logging.getLogger(__name__)


class _Truncated(Exception):
    """The stream ended cleanly but its last line is cut: treat it like a dropped connection."""


class _Changed(Exception):
    """The download's lines are not the stored ones plus the rest: fewer lines than an
    earlier download stored (the file changed on the server, or this download ended
    early on a line's end with no length to check). What was stored stays; the file
    is not marked done."""


class _Stopped(Exception):
    """Asked to stop; everything up to the checkpoint is stored."""


@dataclass(frozen=True, kw_only=True)
class IngestSettings:
    chunk_lines: int = 2000
    download_attempts: int = 5
    lease_seconds: float = 300.0
    read_bytes: int = READ_BYTES
    max_line_bytes: int = MAX_LINE_BYTES
    # A chunk also ends at this many bytes of lines: its lines are kept until it commits
    # (two chunks in flight), and 2,000 lines near the line cap would be 32 GiB.
    chunk_bytes: int = 32 << 20


@dataclass
class IngestResult:
    file_id: str
    kind: str
    state: FileState
    downloads: int = 0  # downloads started by this call
    inserted: int = 0
    duplicates: int = 0
    malformed: int = 0
    bytes_read: int = 0  # by every download this call started, repeats included
    error: str | None = None
    stopped: bool = False
    shared_with: tuple[str, ...] = ()  # other batches naming the same file (an anomaly)

    def add(self, counts: ChunkCounts) -> None:
        self.inserted += counts.inserted
        self.duplicates += counts.duplicates
        self.malformed += counts.malformed


class FileIngest:
    """Stores one file of one batch; the caller holds the batch's lease (``owner``)."""

    def __init__(
        self,
        *,
        client: BatchApiClient,
        results: ResultStore,
        clock: Clock,
        owner: str,
        settings: IngestSettings,
        stop: threading.Event | None = None,
        on_progress: Callable[[], None] = lambda: None,
    ) -> None:
        self.client = client
        self.results = results
        self.clock = clock
        self.owner = owner
        self.settings = settings
        self.stop = stop or threading.Event()
        self.on_progress = on_progress  # after each committed chunk: a long download is alive

    def run(self, *, batch_id: str, file_id: str, kind: str) -> IngestResult:
        """Store the file; returns its state (``pending`` if every attempt failed).

        Raises ``ApiAuthError`` (nothing will work until a person fixes the key),
        ``LeaseLost`` and ``DatabaseUnavailable``.
        """
        outcome = IngestResult(file_id, kind, FileState.PENDING)
        extra = {"batch_id": batch_id, "file_id": file_id}
        for _ in range(self.settings.download_attempts):
            progress = self.results.begin_file(
                batch_id=batch_id, file_id=file_id, kind=kind, now=self.clock.now()
            )
            outcome.shared_with = outcome.shared_with or progress.shared_with
            if progress.state is not FileState.PENDING:
                outcome.state = progress.state
                return outcome
            outcome.downloads += 1
            try:
                self._download(batch_id, file_id, kind, progress.lines_committed, outcome)
            except ApiNotFoundError as exc:
                outcome.state = FileState.MISSING
                outcome.error = f"the server has no such file (404): {exc}"
                self.results.mark_missing(
                    batch_id, file_id, error=outcome.error, now=self.clock.now()
                )
                log.error("%s file is missing: %s", kind, exc, extra=extra)
                return outcome
            except (_Stopped, ApiAborted):
                outcome.stopped = True
                return outcome
            except (ApiTransportError, ApiProtocolError, RetryLater, _Truncated) as exc:
                outcome.error = f"download {outcome.downloads} failed: {exc}"
                self.results.note_failure(batch_id, file_id, error=outcome.error)
                log.warning("%s; resuming from the checkpoint", outcome.error, extra=extra)
                continue
            except ApiAuthError:
                raise
            except (ApiStatusError, _Changed) as exc:  # asking again now changes nothing
                refused = isinstance(exc, ApiStatusError)
                outcome.error = f"download refused: {exc}" if refused else str(exc)
                self.results.note_failure(batch_id, file_id, error=outcome.error)
                log.warning("%s", outcome.error, extra=extra)
                return outcome
            outcome.state = FileState.DONE
            outcome.error = None
            return outcome
        return outcome

    def _download(
        self, batch_id: str, file_id: str, kind: str, skip: int, outcome: IngestResult
    ) -> None:
        """One download from byte 0: lines up to the checkpoint ``skip`` were stored by an
        earlier one and are only counted; the rest are committed chunk by chunk, each
        chunk's rows pulled from the download as its lines arrive (on PostgreSQL its COPY
        stays open meanwhile: the server stores rows while the next piece is read)."""
        with (
            self.results.chunk_connections() as connections,
            Lanes(connections) as lanes,
            self.client.download(file_id) as download,
            HashThread() as sha256,  # beside the splitting and parsing, not before them
        ):
            feed = _LineFeed(
                download.iter_pieces(self.settings.read_bytes),
                LineSplitter(self.settings.max_line_bytes, sha256=sha256),
                skip,
                outcome,
                end_checked=lambda: download.end_checked,
            )
            _ChunkWriter(self, _File(batch_id, file_id, kind), skip, outcome, lanes).write(feed)


@dataclass(frozen=True)
class _File:
    batch_id: str
    file_id: str
    kind: str


class _LineFeed:
    """A download's lines after the checkpoint, handed out as the pieces arrive.

    Every byte is split, hashed and counted, the lines up to the checkpoint only
    counted. At the end of the stream its last line (if it has no newline) is
    checked for a cut (``_Truncated``) and the file's totals are known, with
    ``end_checked()``: whether the download vouches for that end (``Download.end_checked``;
    asked once the pieces have ended, when the download knows: a length is checked then)."""

    def __init__(
        self,
        pieces: Iterator[bytes],
        splitter: LineSplitter,
        skip: int,
        outcome: IngestResult,
        *,
        end_checked: Callable[[], bool],
    ) -> None:
        self._pieces = pieces
        self._end_checked = end_checked
        self._splitter = splitter
        self._skip = skip  # lines stored by an earlier download
        self._seen = 0  # physical lines split so far
        self._outcome = outcome
        self._lines: list[Line] = []  # split, not handed out yet from ``_at`` on
        self._at = 0
        self.totals: FileTotals | None = None  # set once the stream has ended
        self.taken = 0  # lines handed out by the last ``take``
        self._failed: Exception | None = None  # what broke the stream

    def take(self, most: int, max_bytes: int) -> Iterator[list[Line]]:
        """The next ``most`` lines, in the lists they arrive in; fewer at the end of the
        file (``ended``), or once they hold ``max_bytes`` (checked after each list: one
        list's lines more at the most, a piece's worth or a line up to the line cap).
        ``taken`` counts them as they go."""
        self.taken = 0
        held = 0
        while most > 0 and held < max_bytes:
            if self._at >= len(self._lines) and not self._fill():
                return
            part = self._lines[self._at : self._at + most]
            self._at += len(part)
            self.taken += len(part)
            most -= len(part)
            yield part
            held += _bytes_held(part)

    @property
    def ended(self) -> bool:
        """Every line of the file handed out."""
        return self.totals is not None and self._at >= len(self._lines)

    def _fill(self) -> bool:
        """Split pieces until there are lines to hand out; False at the end of the file."""
        splitter = self._splitter
        if self._failed is not None:  # a broken stream (a generator ends when it raises)
            raise self._failed  # must never read as the file's end to a second reader
        while self.totals is None:
            try:
                data = next(self._pieces, None)
            except Exception as exc:
                self._failed = exc
                raise
            if data is None:
                end_checked = self._end_checked()
                tail = _last_line(splitter, end_checked=end_checked)
                self._lines, self._at = [tail] if tail and self._seen >= self._skip else [], 0
                self.totals = FileTotals(
                    bytes=splitter.bytes,
                    lines=splitter.complete_lines + (1 if tail else 0),
                    sha256=splitter.sha256,
                    end_checked=end_checked,
                )
                return bool(self._lines)
            self._outcome.bytes_read += len(data)
            lines = splitter.feed(data)
            skipped = max(0, self._skip - self._seen)
            self._seen += len(lines)
            if len(lines) > skipped:
                self._lines, self._at = lines, skipped
                return True
        return False


class _ChunkWriter:
    """One download's lines after the checkpoint, committed ``chunk_lines`` at a time
    (or ``chunk_bytes``), each chunk with the checkpoint it moves (and, the last, the
    file's totals).

    With two connections (PostgreSQL) a chunk whose rows are all sent drains and commits
    on its connection's thread while the next chunk's rows stream on the other; the
    next one moves the checkpoint only once this one has committed (``_InFlight``)."""

    def __init__(
        self,
        ingest: FileIngest,
        file: _File,
        checkpoint: int,
        outcome: IngestResult,
        lanes: Lanes[ChunkConnection],
    ) -> None:
        self.ingest = ingest
        self.file = file
        self.checkpoint = checkpoint  # lines stored, or in flight, so far
        self.outcome = outcome
        self.lanes = lanes
        self._started = 0  # chunks, to take the lanes in turn

    def write(self, feed: _LineFeed) -> None:
        """Commit the feed's chunks to the file's end, or until asked to stop
        (``_Stopped``). When this returns or raises, every chunk it started has committed
        or failed; the first failure is raised."""
        in_flight: deque[_InFlight] = deque()
        done = False
        try:
            while not done:
                if len(in_flight) == len(self.lanes):  # its lane is the one to take
                    self._settle(in_flight.popleft())
                if self.ingest.stop.is_set():
                    break
                flight = self._start(feed, in_flight[-1] if in_flight else None)
                in_flight.append(flight)
                flight.sent.wait()  # its rows taken from the download, or it failed
                if not flight.all_sent:
                    break  # settled below: its failure is raised
                done = flight.chunk.totals is not None
                self.checkpoint = flight.chunk.to_line  # where the next one starts
            while in_flight:
                self._settle(in_flight.popleft())
        finally:
            for flight in in_flight:  # after a failure: let them end before the connections
                futures.wait([flight.future])
                flight.forget()
        if not done:
            raise _Stopped

    def _start(self, feed: _LineFeed, before: _InFlight | None) -> _InFlight:
        """The next chunk on the next lane: its rows are pulled from the feed in the
        lane's thread (on PostgreSQL straight into its COPY), then it commits there."""
        ingest, file = self.ingest, self.file
        now = ingest.clock.now()  # fresh: this heartbeat keeps the lease of a long harvest
        lease_until = now + timedelta(seconds=ingest.settings.lease_seconds)
        chunk = Chunk(
            batch_id=file.batch_id,
            file_id=file.file_id,
            from_line=self.checkpoint,
            to_line=self.checkpoint,  # and the totals: set when its rows end
            rows=(),
            errors=[],
        )
        flight = _InFlight(chunk, before)
        chunk.rows = _ChunkRows(self, feed, flight)

        def commit(on: ChunkConnection) -> ChunkCounts:
            return ingest.results.commit_chunk(
                chunk=chunk,
                owner=ingest.owner,
                lease_until=lease_until,
                now=now,
                on=on,
                after=flight.after_the_one_before,
            )

        flight.future = self.lanes.run(self._started, commit)
        sent = flight.sent  # not the flight: a future keeps its callbacks, and so its rows
        flight.future.add_done_callback(lambda _: sent.set())  # failed before the end
        self._started += 1
        return flight

    def _settle(self, flight: _InFlight) -> None:
        """Wait for the chunk's commit and count it (or raise why it failed)."""
        try:
            counts = flight.future.result()
        finally:
            flight.forget()
        self.outcome.add(counts)
        self.ingest.on_progress()


class _InFlight:
    """A chunk handed to a lane: its rows stream there, then it commits there.

    Two chunks in flight commit in order: the later one moves the checkpoint only
    after the earlier one committed (``after_the_one_before``), and it sends no row
    whose custom_id the earlier one holds uncommitted (``guarded``): the two would wait
    on each other, the earlier for the later's index entry, the later for the commit."""

    def __init__(self, chunk: Chunk, before: _InFlight | None) -> None:
        self.chunk = chunk
        self.before = before
        self.future: Future[ChunkCounts]
        self.sent = threading.Event()  # its rows all taken from the download, or it failed
        self.all_sent = False  # set before ``sent`` when the rows ended without a failure
        self.custom_ids: set[str] = set()  # what a later chunk must not send before it commits

    def forget(self) -> None:
        """Let go of what it holds once it has ended. The rows and the chunk refer to each
        other (without this, the lines wait for the GC); the chunk before it ended
        before it (kept, every chunk of the file would be)."""
        self.chunk.rows = ()
        self.before = None
        self.custom_ids = set()

    def after_the_one_before(self) -> None:
        """Wait for the chunk before to commit; raise ``_Abandoned`` if it did not."""
        before = self.before
        if before is None:
            return
        futures.wait([before.future])
        if before.future.exception() is not None:
            raise _Abandoned(f"the chunk from line {before.chunk.from_line} did not commit")

    def guarded(self, rows: Iterator[Row]) -> Iterator[Row]:
        """The rows, each noted; a custom_id the chunk before holds waits for its end."""
        before, seen = self.before, self.custom_ids
        held = before.custom_ids if before is not None else set()
        for row in rows:
            custom_id = row[1]
            if custom_id in held and before is not None:
                futures.wait([before.future])
                held = set()  # ended: nothing of it is held now
            seen.add(custom_id)
            yield row


class _Abandoned(Exception):
    """The chunk before this one did not commit: this one is rolled back (its failure
    is the one reported)."""


class _ChunkRows:
    """A chunk's rows, parsed as its lines arrive from the feed; at their end the chunk
    learns where it ends (and, at the end of the file, the file's totals).

    Iterated again (the store does, after a COPY that met a stored custom_id), it
    parses the same lines again, its line errors anew: the lines are kept for that,
    not the rows (a row holds its body as orjson wrote it, a buffer larger than the
    body: 2,000 kept cost 25 MB of peak RSS)."""

    def __init__(self, writer: _ChunkWriter, feed: _LineFeed, flight: _InFlight) -> None:
        self._writer = writer
        self._feed = feed
        self._flight = flight
        self._chunk = flight.chunk
        self._lines: list[Line] | None = None  # once the feed gave them all

    def __iter__(self) -> Iterator[Row]:
        if self._lines is not None:
            self._chunk.errors.clear()
            return self._parse(self._lines)
        return self._first()

    def _first(self) -> Iterator[Row]:
        lines: list[Line] = []
        settings = self._writer.ingest.settings
        flight, feed = self._flight, self._feed
        taking = feed.take(settings.chunk_lines, settings.chunk_bytes)
        yield from flight.guarded(self._parse(chain.from_iterable(_kept(taking, lines))))
        chunk = self._chunk
        chunk.to_line = chunk.from_line + feed.taken
        if feed.ended:
            totals = chunk.totals = feed.totals
            if totals is not None and totals.lines != chunk.to_line:  # done means every line
                raise _Changed(
                    f"the download has {totals.lines} lines, but {chunk.to_line} are stored: "
                    "the file changed between downloads (or this one ended early without "
                    "saying its length); what was stored is kept and the file is not "
                    "marked done"
                )
        self._lines = lines
        flight.all_sent = True
        flight.sent.set()  # the next chunk may take the feed

    def _parse(self, lines: Iterable[Line]) -> Iterator[Row]:
        ingest, file = self._writer.ingest, self._writer.file
        return iter_rows(
            lines,
            self._chunk.from_line + 1,
            batch_id=file.batch_id,
            file_id=file.file_id,
            kind=file.kind,
            errors=self._chunk.errors,
            nul_unsafe=ingest.results.nul_unsafe,
            json_bytes=ingest.results.json_bytes,
        )


def _bytes_held(lines: list[Line]) -> int:
    """What the lines hold in memory (an OverlongLine only its prefix)."""
    try:  # all bytes but for a rare OverlongLine, which has no len(): summed in C
        return sum(map(len, cast("list[bytes]", lines)))
    except TypeError:
        held = 0
        for line in lines:
            held += len(line.prefix) if isinstance(line, OverlongLine) else len(line)
        return held


def _kept(parts: Iterator[list[Line]], into: list[Line]) -> Iterator[list[Line]]:
    for part in parts:
        into.extend(part)
        yield part


def _last_line(splitter: LineSplitter, *, end_checked: bool) -> Line:
    """What followed the last newline. A last line that has no newline and does not
    parse is what a cut looks like when the server closed cleanly: ``_Truncated``,
    unless the download vouched for its end (then it is a bad line like any other, kept
    as a line error: a file ending in garbage stayed pending for ever). An over-long one
    is a line error, not a sign of a cut."""
    tail = splitter.tail()
    if end_checked or not isinstance(tail, bytes) or not tail or tail.isspace():
        return tail
    if not is_whole_json(tail):
        raise _Truncated(
            f"the last line ({len(tail)} bytes) has no newline and does not parse: "
            "the file looks cut short"
        )
    return tail

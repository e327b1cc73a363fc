"""Peak RSS of a process fed a gzip bomb, the bounded client side by side with the old way.

    .venv/bin/python bench/bad_bodies.py             # 1 GiB bombs (about 1 MB on the wire)
    .venv/bin/python bench/bad_bodies.py --mib 256   # smaller, quicker

A local HTTP server (a thread of this process, on 127.0.0.1) answers every
``GET /batches/...`` with a Batch object padded to ``--mib`` MiB of spaces and
every ``GET /files/.../content`` with one line of ``--mib`` MiB of ``a`` (no
newline until the end) followed by a good result line, both gzipped. Each case
runs in a fresh subprocess, so its peak RSS (``ru_maxrss``) is its own:

- ``answer / bounded``: ``BatchApiClient.retrieve`` (refused at ``api_max_answer_bytes``).
- ``answer / old way``: httpx's own decoding and ``response.content``, what the
  client did before the cap.
- ``file / bounded``: ``FileIngest`` into a fresh SQLite database (the long line
  becomes a line error at ``ingest_max_line_bytes``, the good line is stored).
- ``file / old way``: httpx's ``iter_bytes`` and a splitter without a cap, what
  ingestion did before.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "sk-bench-bad-bodies"
GOOD_LINE = b'{"id": "l1", "custom_id": "after-the-bomb", "response": {"status_code": 200}}\n'


def gzipped(head: bytes, filler: bytes, mib: int, tail: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = filler * (1 << 20)
    parts = [compressor.compress(head)]
    parts += [compressor.compress(block) for _ in range(mib)]
    return b"".join(parts) + compressor.compress(tail) + compressor.flush()


def start_server(mib: int) -> tuple[ThreadingHTTPServer, int]:
    answer = gzipped(
        b'{"id": "batch_bomb", "object": "batch", "status": "in_progress"', b" ", mib, b"}"
    )
    file = gzipped(b"", b"a", mib, b"\n" + GOOD_LINE)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = file if "/files/" in self.path else answer
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a bounded client hangs up mid-body: that is the point

    httpd = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, len(answer)


# --- one case, in its own process ------------------------------------------------------------


def answer_bounded(base_url: str, _workdir: Path) -> str:
    from orchestrator.api import ApiAnswerTooLarge, ApiSettings, BatchApiClient
    from orchestrator.core.retry_policy import RetryPolicy
    from orchestrator.secret import Secret

    with BatchApiClient(
        ApiSettings(api_key=Secret(KEY), base_url=base_url), policy=RetryPolicy()
    ) as client:
        try:
            client.retrieve("batch_bomb")
        except ApiAnswerTooLarge as exc:
            return f"refused: {exc}"[:160]
    return "accepted"


def answer_old_way(base_url: str, _workdir: Path) -> str:
    import httpx
    import orjson

    with httpx.Client(base_url=base_url) as client:
        content = client.get("/batches/batch_bomb").content
    return f"read {len(content)} bytes, parsed: {type(orjson.loads(content)).__name__}"


def file_bounded(base_url: str, workdir: Path) -> str:
    from orchestrator.api import ApiSettings, BatchApiClient
    from orchestrator.clock import SystemClock
    from orchestrator.core.retry_policy import RetryPolicy
    from orchestrator.db import migrate
    from orchestrator.db.batches import BatchStore
    from orchestrator.db.database import Database
    from orchestrator.db.engine import make_engine
    from orchestrator.db.polls import PollStore
    from orchestrator.db.results import ResultStore
    from orchestrator.processes.ingest import FileIngest, IngestSettings
    from orchestrator.secret import Secret

    url = f"sqlite:///{workdir / 'bad-bodies.sqlite3'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    db = Database.connect(url)
    clock = SystemClock()
    BatchStore(db).track(["batch_bomb"], now=clock.now(), source="track")
    PollStore(db).claim_due(now=clock.now(), owner="bench", lease_seconds=600, limit=1)
    client = BatchApiClient(
        ApiSettings(api_key=Secret(KEY), base_url=base_url), policy=RetryPolicy()
    )
    outcome = FileIngest(
        client=client,
        results=ResultStore(db),
        clock=clock,
        owner="bench",
        settings=IngestSettings(lease_seconds=600),
    ).run(batch_id="batch_bomb", file_id="file-bomb", kind="output")
    client.close()
    db.dispose()
    return f"{outcome.state.value}: {outcome.inserted} stored, {outcome.malformed} line error(s)"


def file_old_way(base_url: str, _workdir: Path) -> str:
    import httpx

    from orchestrator.core.line_splitter import LineSplitter

    splitter = LineSplitter(max_line=1 << 62)  # no cap: the splitter as it was
    lines = 0
    with (
        httpx.Client(base_url=base_url) as client,
        client.stream("GET", "/files/file-bomb/content") as response,
    ):
        for chunk in response.iter_bytes(1 << 20):
            lines += len(splitter.feed(chunk))
    return f"{lines} lines, {splitter.bytes} bytes"


CASES = {
    ("answer", "bounded"): answer_bounded,
    ("answer", "old way"): answer_old_way,
    ("file", "bounded"): file_bounded,
    ("file", "old way"): file_old_way,
}


def child(case: str, way: str, base_url: str, workdir: str) -> None:
    import logging

    logging.disable(logging.WARNING)
    outcome = CASES[(case, way)](base_url, Path(workdir))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"outcome": outcome, "peak_rss_mb": peak_mb}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="decompressed size of each bomb")
    parser.add_argument("--child", nargs=4, metavar=("CASE", "WAY", "URL", "DIR"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    httpd, wire = start_server(args.mib)
    base_url = f"http://127.0.0.1:{httpd.server_port}/v1"
    print(f"bombs of {args.mib} MiB decompressed, {wire / 1e6:.2f} MB on the wire (the answer)")
    peaks: dict[tuple[str, str], float] = {}
    try:
        for case, way in CASES:
            with tempfile.TemporaryDirectory() as workdir:
                done = subprocess.run(
                    [sys.executable, __file__, "--child", case, way, base_url, workdir],
                    capture_output=True,
                    text=True,
                    check=False,
                )
            if done.returncode != 0:
                print(f"{case:6} {way:8} failed: {done.stderr.strip().splitlines()[-1:]}")
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            peaks[(case, way)] = result["peak_rss_mb"]
            print(f"{case:6} {way:8} peak RSS {result['peak_rss_mb']:7.1f} MB  {result['outcome']}")
    finally:
        httpd.shutdown()
    for case in ("answer", "file"):
        if (case, "bounded") in peaks and (case, "old way") in peaks:
            ratio = peaks[(case, "old way")] / peaks[(case, "bounded")]
            print(f"{case}: the old way used {ratio:.1f}x the bounded client's peak RSS")
    return 0


if __name__ == "__main__":
    sys.exit(main())

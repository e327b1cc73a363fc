"""The console's web app: three pages, a download, static files; nothing that writes.

Handlers are plain functions (Starlette runs them in its thread pool) over the
console's read queries (``orchestrator.db.browse``) on a read-only database
handle: even a bug here could not change a row.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from jinja2 import Environment
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from orchestrator.cli.result_writers import write_rows
from orchestrator.cli.selection import STATUS_CHOICES
from orchestrator.console.guard import Guard
from orchestrator.console.render import STATIC, environment, render
from orchestrator.console.selectors import BadSelector, parse_selection
from orchestrator.console.timeline import timeline
from orchestrator.core.cancel_state import CANCEL_STATES
from orchestrator.core.ids import validate_batch_id
from orchestrator.db.browse import SORTS, BadCursor, BrowseQueries
from orchestrator.db.database import Database
from orchestrator.db.queries import OperatorQueries
from orchestrator.errors import DatabaseError, InvalidBatchId

SPOOL_BYTES = 8 * 1024 * 1024  # a download larger than this is staged on disk, not in memory
CHUNK_BYTES = 64 * 1024
FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv"}


@dataclass(frozen=True)
class Console:
    db: Database
    env: Environment
    refresh_ms: int

    def page(self, request: Request, name: str, status: int = 200, **context: object) -> Response:
        partial = request.headers.get("x-console-partial") == "1"
        html = render(
            self.env,
            name,
            partial=partial,
            # A page that says what was wrong is not refreshed: it would only say it again.
            refresh_ms=self.refresh_ms if status == 200 else 0,
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers={"vary": "X-Console-Partial"})

    def problem(self, request: Request, status: int, message: str) -> Response:
        return self.page(request, "problem.html", status, title=str(status), message=message)

    # --- pages -----------------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        view = BrowseQueries(self.db).overview()
        return self.page(request, "overview.html", title="Overview", view=view)

    def batches(self, request: Request) -> Response:
        params = {key: request.query_params.getlist(key) for key in request.query_params}
        queries = BrowseQueries(self.db)
        now = queries.now()
        try:
            selection = parse_selection(params, now)
            page = queries.list_page(
                selection.where, sort=selection.sort, after=selection.after, limit=selection.limit
            )
        except (BadSelector, BadCursor) as exc:
            return self.problem(request, 400, str(exc))
        return self.page(
            request,
            "batches.html",
            title="Batches",
            now=now,
            selection=selection,
            page=page,
            sorts=list(SORTS),
            statuses=STATUS_CHOICES,
            cancel_states=CANCEL_STATES,
        )

    def batch(self, request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        view = BrowseQueries(self.db).batch_view(batch_id) if _can_be_id(batch_id) else None
        if view is None:
            return self.problem(request, 404, f"No batch {batch_id} is tracked here.")
        return self.page(
            request,
            "batch.html",
            title=batch_id,
            view=view,
            timeline=timeline(view),
        )

    def results(self, request: Request) -> Response:
        """Every stored result of one batch, as `orchestrator results -o F` writes it."""
        batch_id, fmt = request.path_params["batch_id"], request.path_params["fmt"]
        if fmt not in FORMATS:
            return self.problem(request, 404, f"No download as {fmt}: use jsonl or csv.")
        queries = OperatorQueries(self.db)
        if not _can_be_id(batch_id) or not queries.summaries([batch_id]):
            return self.problem(request, 404, f"No batch {batch_id} is tracked here.")
        # The command line's own writer, so both apply the same rules to what they write
        # (CSV cells that a spreadsheet would run as a formula, among them).
        staged = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed by the stream)
            max_size=SPOOL_BYTES, mode="w+", encoding="utf-8", newline=""
        )
        try:
            write_rows(staged, queries.iter_results(batch_id), fmt)
            staged.seek(0)
        except BaseException:
            staged.close()
            raise
        safe_name = re.sub(r"[^A-Za-z0-9_-]", "_", batch_id)
        return StreamingResponse(
            _chunks(staged),
            media_type=FORMATS[fmt],
            headers={"content-disposition": f'attachment; filename="{safe_name}-results.{fmt}"'},
        )


def _can_be_id(text: str) -> bool:
    """Whether ``text`` can be a batch id. One that cannot is tracked nowhere: a 404
    without asking the database (which may refuse it outright: PostgreSQL, a NUL)."""
    try:
        validate_batch_id(text)
    except InvalidBatchId:
        return False
    return True


def _chunks(staged: IO[str]) -> Iterator[bytes]:
    with staged:
        while text := staged.read(CHUNK_BYTES):
            yield text.encode()


def create_app(db: Database, *, token: str | None, refresh_ms: int = 2000) -> Guard:
    """The console over ``db`` (open it read-only), behind its guard."""
    console = Console(db, environment(), refresh_ms)

    async def database_trouble(request: Request, exc: Exception) -> Response:
        return console.problem(request, 503, f"The database did not answer: {exc}")

    app = Starlette(
        routes=[
            Route("/", console.overview),
            Route("/batches", console.batches),
            Route("/batches/{batch_id}", console.batch),
            Route("/batches/{batch_id}/results.{fmt}", console.results),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={DatabaseError: database_trouble},
    )
    return Guard(app, token=token)

"""List pages of ``GET /v1/batches``: a stream of listed batches back in pages
(``orchestrator sync``), and one page read on its own (the reconcilers' shared walk,
where the cursor between pages lives in the database)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from orchestrator.api.client import ApiResult, BatchApiClient
from orchestrator.api.errors import ApiCall, ApiProtocolError

__all__ = ["Page", "fetch_page", "pages"]


def pages(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """Group ``BatchApiClient.iter_batches(limit=size)`` back into its pages."""
    page: list[dict[str, Any]] = []
    for item in items:
        page.append(item)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_after: str | None  # the cursor of the page after it; None: this is the last


def fetch_page(client: BatchApiClient, after: str | None, limit: int) -> Page:
    """The page after ``after`` (None: the first), checked as ``iter_batches`` checks
    each: a ``data`` array of objects, and a cursor that moves on."""
    answer = client.list_batches(after=after, limit=limit)
    data = answer.data.get("data")
    if not isinstance(data, list) or not all(isinstance(b, dict) for b in data):
        raise _page_error(answer, "the list has no 'data' array of objects")
    if not data or answer.data.get("has_more") is not True:
        return Page(data, None)
    last = data[-1].get("id")
    if not isinstance(last, str) or not last or last == after:
        raise _page_error(answer, "the list cursor (last id) did not advance")
    return Page(data, last)


def _page_error(page: ApiResult, detail: str) -> ApiProtocolError:
    return ApiProtocolError(
        ApiCall("list", "GET", "/batches"),
        status=page.status,
        detail=detail,
        request_id=page.request_id,
    )

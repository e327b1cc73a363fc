"""Listed batches back in their pages (``orchestrator sync`` stores a page at a time).
One page read on its own, checked, is ``BatchApiClient.list_page``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["pages"]


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

"""A stream of listed batches back in pages (``orchestrator sync`` and the reconciler's
list walk): a page is fetched only when the one before it has been handled."""

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

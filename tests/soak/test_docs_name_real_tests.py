"""Every test docs/bad-input.md, docs/soak.md and docs/operators.md name exists, so the
tables cannot rot."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("docs/bad-input.md", "docs/soak.md", "docs/operators.md")
# `tests/unit/test_x.py::test_name`, optionally with a parametrization `[...]` after it
REFERENCE = re.compile(r"(tests/[\w/]+\.py)::(\w+)")


@cache
def _tests_in(path: Path) -> frozenset[str]:
    """Names of the test functions in a file, top level or in classes."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    )


@pytest.mark.parametrize("doc", DOCS)
def test_every_named_test_exists(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    references = REFERENCE.findall(text)
    assert references, f"{doc} names no test"
    missing = [
        f"{file}::{name}"
        for file, name in references
        if not (ROOT / file).is_file() or name not in _tests_in(ROOT / file)
    ]
    assert not missing, f"{doc} names tests that do not exist: {missing}"

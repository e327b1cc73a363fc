"""Durably cancel OpenAI Batch API jobs and keep every paid-for partial result."""

__version__ = "0.1.0"

import importlib.machinery
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.python_api import BatchState, CancelReceipt, Orchestrator

__all__ = ["BatchState", "CancelReceipt", "Orchestrator", "__version__"]


class _HttpxWithoutItsCommandLine:
    """``import httpx`` imports httpx's own command line (rich, click, pygments) when
    they are installed, as they are here: about 0.2 s of every process's start-up
    (two thirds of importing httpx) for a program we never run. This finder gives
    ``httpx._main`` a stand-in whose ``main`` says so; every other import is left to
    the finders after it. (A finder and loader by their methods: importlib.abc would
    be one more import for every command.)"""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "httpx._main":
            return None
        return importlib.machinery.ModuleSpec(fullname, self)  # type: ignore[arg-type]

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module

    def exec_module(self, module: types.ModuleType) -> None:
        def main(*args: object, **kwargs: object) -> None:
            raise SystemExit("httpx's command line is not loaded in orchestrator's processes")

        module.main = main  # type: ignore[attr-defined]


if "httpx" not in sys.modules:
    sys.meta_path.insert(0, _HttpxWithoutItsCommandLine())


def __getattr__(name: str) -> Any:
    """`from orchestrator import Orchestrator` imports the Python API (and SQLAlchemy)
    only then: `import orchestrator`, and so every command's start-up, stays light."""
    if name in ("BatchState", "CancelReceipt", "Orchestrator"):
        from orchestrator import python_api

        return getattr(python_api, name)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")

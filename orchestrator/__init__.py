"""Durably cancel OpenAI Batch API jobs and keep every paid-for partial result."""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.python_api import BatchState, CancelReceipt, Orchestrator

__all__ = ["BatchState", "CancelReceipt", "Orchestrator", "__version__"]


def __getattr__(name: str) -> Any:
    """`from orchestrator import Orchestrator` imports the Python API (and SQLAlchemy)
    only then: `import orchestrator`, and so every command's start-up, stays light."""
    if name in ("BatchState", "CancelReceipt", "Orchestrator"):
        from orchestrator import python_api

        return getattr(python_api, name)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")

"""Templates: Jinja2 with autoescaping everywhere, and the few filters pages use.

Every piece of outside text (metadata, error messages, ids from `sync`, result
bodies) reaches a page only through autoescaped expressions; nothing is marked
safe. A page with the header ``X-Console-Partial: 1`` is rendered as its ``live``
block alone: what console.js fetches to refresh the page in place.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from orchestrator.cli.render import age, counts, moment
from orchestrator.core import json_text
from orchestrator.core.cancel_request import CancelState

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


def since(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "-"
    return age(max(0.0, (now - then).total_seconds()))


def as_json(value: Any, limit: int | None = None) -> str:
    if value is None:
        return "-"
    text = json_text.dumps(value, sort_keys=True).decode()
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["CancelState"] = CancelState
    env.filters.update(
        age=age,
        moment=moment,
        since=since,
        as_json=as_json,
        counts=counts,
    )
    return env


def render(env: Environment, name: str, *, partial: bool, **context: Any) -> str:
    template = env.get_template(name)
    if partial:
        return "".join(template.blocks["live"](template.new_context(context)))
    return template.render(context)

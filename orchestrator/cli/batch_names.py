"""A batch named on the command line: its full id, or a unique beginning of one.

Tables print long ids cut short (`batch_1b855b2e…`); at 3 a.m. an operator
pastes that back, so `show` and `results` accept it when it names one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from orchestrator.cli.context import Context
from orchestrator.cli.ids_input import ELLIPSIS, IdList
from orchestrator.core.ids import BATCH_PREFIX, validate_batch_id
from orchestrator.core.visible import visible
from orchestrator.db.database import Database
from orchestrator.db.queries import OperatorQueries
from orchestrator.errors import UnknownBatch

CANDIDATES_SHOWN = 5
# Beginnings are looked up one query each: for a list longer than this (a pipe from
# `status -o ids`, a file) the ids not tracked are taken as full ids.
MAX_BEGINNINGS = 100


def resolve_batch_id(queries: OperatorQueries, text: str, *, if_unknown: str) -> str:
    """The tracked batch `text` names; UnknownBatch (exit 4) when none or several do.

    `if_unknown` completes "batch X is not tracked here: ...".
    """
    name = validate_batch_id(text.strip().removesuffix(ELLIPSIS))
    matches = queries.ids_named_by(name, limit=CANDIDATES_SHOWN + 1)
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UnknownBatch(f"batch {name} is not tracked here: {if_unknown}")
    raise UnknownBatch(_ambiguous(name, matches))


def _ambiguous(name: str, matches: Sequence[str]) -> str:
    shown = ", ".join(matches[:CANDIDATES_SHOWN])
    more = ", ..." if len(matches) > CANDIDATES_SHOWN else ""
    return f"{name} begins more than one tracked batch id ({shown}{more}): give more of the id"


@dataclass
class NamedIds:
    """Ids as `cancel`, `track` and `forget` take them."""

    ids: list[str] = field(default_factory=list)  # full ids, in the order given
    expanded: dict[str, str] = field(default_factory=dict)  # a beginning -> its full id
    rejected: list[str] = field(default_factory=list)  # messages


def resolve_named_ids(
    queries: OperatorQueries, names: Sequence[str], *, new_allowed: bool, any_id: bool = False
) -> NamedIds:
    """Each name as `show` reads it: a tracked id, or the one tracked id it begins
    (several: refused). A name that is neither is refused unless `new_allowed`, and then
    taken as a new id only when it looks like one (BATCH_PREFIX, or `any_id`)."""
    out = NamedIds()
    known = queries.known_ids(names)
    unknown = [n for n in names if n not in known]
    look_up = len(unknown) <= MAX_BEGINNINGS
    for name in names:
        if name in known:
            out.ids.append(name)
            continue
        matches = queries.ids_named_by(name, limit=CANDIDATES_SHOWN + 1) if look_up else []
        if len(matches) == 1:
            out.ids.append(matches[0])
            out.expanded[name] = matches[0]
        elif matches:
            out.rejected.append(_ambiguous(name, matches))
        elif not new_allowed:
            out.rejected.append(f"{name}: no tracked batch has this id or begins with it")
        elif not any_id and not name.startswith(BATCH_PREFIX):
            out.rejected.append(
                f"{name}: not tracked, and not a batch id (they begin {BATCH_PREFIX}); "
                "check it, or add --any-id for an id of another form"
            )
        else:
            out.ids.append(name)
    out.ids = list(dict.fromkeys(out.ids))
    return out


def named_ids(ctx: Context, db: Database, ids: IdList, *, new_allowed: bool = True) -> IdList:
    """The ids given, each resolved as `show` resolves one (a unique beginning of a
    tracked id is that id) or refused; the refused are reported and kept in `rejected`."""
    named = resolve_named_ids(
        OperatorQueries(db),
        ids.valid,
        new_allowed=new_allowed,
        any_id=getattr(ctx.args, "any_id", False),
    )
    for given, full in named.expanded.items():
        ctx.err.print(f"{visible(given)} is {full}", markup=False)
    resolved = IdList(named.ids, [*ids.rejected, *named.rejected])
    for message in named.rejected:
        ctx.err.print(f"rejected: {visible(message)}", markup=False)
    return resolved

"""A batch named on the command line: its full id, or a unique beginning of one.

Tables print long ids cut short (`batch_1b855b2e…`); at 3 a.m. an operator
pastes that back, so `show` and `results` accept it when it names one batch.
"""

from __future__ import annotations

from orchestrator.core.ids import validate_batch_id
from orchestrator.db.queries import OperatorQueries
from orchestrator.errors import UnknownBatch

ELLIPSIS = "…"  # what tables put at the end of a shortened id
CANDIDATES_SHOWN = 5


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
    shown = ", ".join(matches[:CANDIDATES_SHOWN])
    more = ", ..." if len(matches) > CANDIDATES_SHOWN else ""
    raise UnknownBatch(
        f"{name} begins more than one tracked batch id ({shown}{more}): give more of the id"
    )

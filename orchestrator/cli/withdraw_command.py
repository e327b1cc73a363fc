"""`orchestrator cancel --withdraw`: take back cancel requests not sent yet.

A request can be taken back only while nothing has gone to the API: pending, no
attempt made, no worker holding it. Any other is kept, and the reason is said
(`core/cancel_request.withdraw` decides). Ids are read as `show` reads them; the
selector flags choose from the table as they do for a bulk cancel (`--cancel pending`
and the rest), and a withdrawal needs no confirmation: `cancel` asks again.
"""

from __future__ import annotations

from orchestrator.cli.batch_names import named_ids
from orchestrator.cli.context import Context, Exit
from orchestrator.cli.ids_input import ids_and_selector
from orchestrator.cli.output import emit, record
from orchestrator.core.visible import visible
from orchestrator.db.cancels import CancelStore
from orchestrator.db.queries import OperatorQueries
from orchestrator.db.server_clock import database_clock


def run_withdraw(ctx: Context) -> Exit:
    given = ids_and_selector(ctx)
    if given is None:
        return Exit.USAGE
    db = ctx.database()
    try:
        ids = named_ids(ctx, db, given[0], new_allowed=False)
        # a name no tracked batch has (or begins): with nothing else to try, the command
        # ends as `show` of an unknown batch does, exit 4
        unknown = len(ids.rejected) > len(given[0].rejected)
        now = database_clock(db).now()
        chosen = list(ids.valid)
        if not given[1].is_empty:
            where = given[1].batch_filter(now)
            chosen += [r.id for r in OperatorQueries(db).select_batches(where)]
        if ctx.args.dry_run:
            to_try = list(dict.fromkeys(chosen))
            emit(ctx, {"dry_run": True, "to_try": to_try}, [record(i, "to_try") for i in to_try])
            ctx.err.print(f"dry run: would try to withdraw {len(to_try)} request(s)")
            if unknown and not to_try:
                return Exit.NOT_FOUND
            return Exit.ATTENTION if ids.rejected else Exit.OK  # as `forget --dry-run`
        summary = CancelStore(db).withdraw(chosen, now=now)
    finally:
        db.dispose()
    document = {"withdrawn": summary.withdrawn, "kept": summary.refused, "rejected": ids.rejected}
    records = [record(i, "withdrawn") for i in summary.withdrawn]
    records += [record(i, "kept", why=why, listed=False) for i, why in summary.refused.items()]
    if not emit(ctx, document, records):
        ctx.out.print(f"withdrew {len(summary.withdrawn)} cancel request(s)", markup=False)
        for batch_id, why in summary.refused.items():
            ctx.out.print(f"  {batch_id}: kept, {visible(why)}", markup=False)
    if unknown and not chosen:
        return Exit.NOT_FOUND
    return Exit.ATTENTION if summary.refused or ids.rejected else Exit.OK

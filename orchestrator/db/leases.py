"""Leases: which process works on a row, and the one rule for when that stops.

Cancel requests (the worker) and batches (the reconciler's polls and file
ingestion) are leased the same way, by this module: ``lease_owner`` names the
process, ``lease_expires_at`` says until when. A lease is free when

- nobody holds it, or
- it has expired (``lease_expires_at <= now``), or
- the process holding it has stopped, or has not heartbeated its ``processes``
  row for ``stale_seconds`` (20 s by default): it is dead, whatever its leases say;
  judged so only by a process whose own heartbeats show the database heard it over
  that time (``orchestrator.core.liveness``): after an outage every heartbeat is old.

The last clause is what makes a crash cost seconds: a live process heartbeats its
row every few seconds from a thread of its own (``orchestrator.processes.presence``),
however slow its work, so its leases last as long as they always did; a killed one
stops, and everything it held, running or queued, is free within ``stale_seconds``.

Every ``now`` here is the database server's time (``orchestrator.db.server_clock``),
so hosts whose clocks disagree judge leases alike. Claims skip rows other claims
hold (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite has one writer). Taking over a
lease someone else held records a ``lease_recovered`` event on the batch. Writes
that finish a piece of work check the lease is still theirs (``fence``), so a
process that lost its lease cannot undo what the new holder decided.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Row,
    Select,
    Table,
    Update,
    bindparam,
    delete,
    or_,
    select,
    update,
)
from sqlalchemy.orm import QueryableAttribute, Session

from orchestrator.db.batches import EventRow, event_values
from orchestrator.db.database import Database, Prepared, chunks, in_list
from orchestrator.db.models import BatchEvent, Process, table_of

__all__ = ["PROCESS_STALE_SECONDS", "Leases", "ProcessRegistry"]

PROCESS_STALE_SECONDS = 20.0  # no heartbeat for this long: the process is dead
FORGET_PROCESSES_AFTER = timedelta(days=7)  # rows of processes gone this long are deleted
NO_HEARTBEAT_IS_OLD_ENOUGH = datetime(1970, 1, 1, tzinfo=UTC)  # see Leases._stale_before


class Leases:
    """Claim, heartbeat, release and fence the leases of one table (keyed by batch id)."""

    def __init__(
        self,
        db: Database,
        table: Table,
        key: str,
        *,
        source: str,
        stale_seconds: float = PROCESS_STALE_SECONDS,
    ) -> None:
        self.db = db
        self.table = table
        self.key = table.c[key]
        self.owner = table.c.lease_owner
        self.expires = table.c.lease_expires_at
        self.source = source
        self.stale_seconds = stale_seconds
        # Statements built once for callers that lease by a ``due`` of bound parameters
        # (the worker claims every tenth of a second): keyed by what they were built from.
        self._locks: dict[tuple[int, ...], tuple[object, Prepared]] = {}
        # the fence of one key, built once (an IN of one key rendered at every execution
        # cost more than the UPDATE: a result file's chunks fence every 2,000 lines)
        self._fence = (
            update(table)
            .where(self.key == bindparam("f_key"), self.owner == bindparam("f_owner"))
            .values(lease_expires_at=bindparam("f_until", type_=self.expires.type))
        )

    # --- the rule -------------------------------------------------------------------

    def free(self, now: datetime) -> ColumnElement[bool]:
        """The one expiry rule, as a SQL condition on the leased table at ``now``."""
        return self._free(now, self._stale_before(now))

    def _stale_before(self, now: datetime) -> datetime:
        """A holder whose heartbeat is this old is dead, unless this process cannot tell
        (``OwnHeartbeats.may_judge_others``: it was not heard itself, an outage perhaps):
        then no heartbeat is old enough, and only expiry and a clean stop free a lease."""
        own = self.db.own_heartbeats
        if own is not None and not own.may_judge_others(now):
            return NO_HEARTBEAT_IS_OLD_ENOUGH
        return now - timedelta(seconds=self.stale_seconds)

    def _free(
        self,
        now: datetime | BindParameter[datetime],
        stale_before: datetime | BindParameter[datetime],
    ) -> ColumnElement[bool]:
        """``free``, with the times as values or as parameters (a statement built once)."""
        return or_(
            self.owner.is_(None),
            self.expires <= now,
            self.owner.in_(_dead_processes(stale_before)),
        )

    # --- claim and take over ------------------------------------------------------------

    def claim(
        self,
        session: Session | Connection,
        owner: str,
        *,
        now: datetime,
        lease_seconds: float,
        due: ColumnElement[bool],
        order_by: Sequence[QueryableAttribute[object]],
        limit: int,
        due_params: Mapping[str, object] | None = None,
        columns: Sequence[QueryableAttribute[object]] = (),
    ) -> Sequence[Sequence[object]]:
        """Lease up to ``limit`` rows that are ``due`` and free, in ``order_by`` order;
        returns them as ``lock`` read them: the key, who held the lease, until when, then
        ``columns``. Records a take-over for each row someone else held.

        With ``due_params`` (``due`` then uses those bound parameters and is the same
        object at every call), the statements are built once and reused: building them,
        expiry rule and all, cost more than running them. They run on the driver
        (``Database.compile``), and the rows are plain tuples."""
        if due_params is None:
            rows: Sequence[Sequence[object]] = self.lock(
                session, owner, now=now, due=due, order_by=order_by, limit=limit, columns=columns
            )
        else:
            rows = self._lock_prepared(
                session, owner, now, due, order_by, limit, columns, due_params
            )
        if not rows:
            return []
        self.db.rows_for_ids(
            session,
            f"lease-take:{self.table.name}",
            self._take,
            [str(row[0]) for row in rows],
            {"owner": owner, "until": now + timedelta(seconds=lease_seconds)},
        )
        return rows

    def _take(self, size: int) -> Update:
        return (
            update(self.table)
            .where(self.key.in_(in_list(size)))
            .values(lease_owner=bindparam("_owner"), lease_expires_at=bindparam("_until"))
        )

    def lock(
        self,
        session: Session | Connection,
        owner: str,
        *,
        now: datetime,
        due: ColumnElement[bool],
        order_by: Sequence[QueryableAttribute[object]],
        limit: int | None = None,
        columns: Sequence[QueryableAttribute[object]] = (),
    ) -> Sequence[Row[tuple[object, ...]]]:
        """Lock the rows that are ``due`` and free, as ``claim`` does, and read them: the
        key, who held the lease, until when, then ``columns``. The caller writes the
        lease (or its end) in this transaction: no one else can take these rows until
        it commits. Records a take-over for each row someone else held."""
        if limit is not None and limit <= 0:
            return []
        query = (
            select(self.key, self.owner, self.expires, *columns)
            .where(due, self.free(now))
            .order_by(*order_by)
            .with_for_update(skip_locked=True, of=self.table)
        )
        rows = session.execute(query if limit is None else query.limit(limit)).all()
        self._record_take_overs(session, rows, owner, now)
        return rows

    def _lock_prepared(
        self,
        session: Session | Connection,
        owner: str,
        now: datetime,
        due: ColumnElement[bool],
        order_by: Sequence[QueryableAttribute[object]],
        limit: int,
        columns: Sequence[QueryableAttribute[object]],
        due_params: Mapping[str, object],
    ) -> list[tuple[object, ...]]:
        """``lock``, by a statement built once (see ``claim``)."""
        if limit <= 0:
            return []
        params = {
            **{k.removeprefix("_"): v for k, v in due_params.items()},
            "lease_now": now,
            "stale_before": self._stale_before(now),
            "limit": limit,
        }
        rows = self._prepared_lock(due, order_by, columns).rows(session, params)
        self._record_take_overs(session, rows, owner, now)
        return rows

    def _record_take_overs(
        self,
        session: Session | Connection,
        rows: Sequence[Sequence[object]],
        owner: str,
        now: datetime,
    ) -> None:
        events = [
            self._taken_over(str(row[0]), str(row[1]), row[2], owner, now)  # type: ignore[arg-type]
            for row in rows
            if row[1] not in (None, owner)
        ]
        self.db.insert_rows(session, table_of(BatchEvent), events)

    def _prepared_lock(
        self,
        due: ColumnElement[bool],
        order_by: Sequence[QueryableAttribute[object]],
        columns: Sequence[QueryableAttribute[object]],
    ) -> Prepared:
        key = (id(due), *map(id, order_by), -1, *map(id, columns))
        found = self._locks.get(key)
        if found is None:
            query = (
                select(self.key, self.owner, self.expires, *columns)
                .where(due, self._free(bindparam("_lease_now"), bindparam("_stale_before")))
                .order_by(*order_by)
                .with_for_update(skip_locked=True, of=self.table)
                .limit(bindparam("_limit"))
            )
            # `due` is kept with it, so its id stays its own
            found = self._locks[key] = (due, self.db.compile(query))
        return found[1]

    def _taken_over(
        self, batch_id: str, previous: str, expires: datetime | None, owner: str, now: datetime
    ) -> EventRow:
        why = (
            f"its lease expired at {expires.isoformat()}"
            if expires is not None and expires <= now
            else f"its process stopped heartbeating for {self.stale_seconds:g}s or stopped"
        )
        detail = f"{previous}: {why}; taken over by {owner}"
        return event_values(batch_id, "lease_recovered", now, self.source, detail=detail)

    # --- keep, give back, check ---------------------------------------------------------

    def heartbeat(
        self, owner: str, keys: Iterable[str], *, now: datetime, lease_seconds: float
    ) -> int:
        """Extend ``owner``'s leases on ``keys``; returns how many it still held."""
        held = 0
        until = now + timedelta(seconds=lease_seconds)
        with self.db.transaction() as session:
            for chunk in chunks(sorted(set(keys))):
                held += self._set(session, owner, chunk, lease_expires_at=until)
        return held

    def release(self, owner: str, keys: Iterable[str], **values: object) -> int:
        """Give leases back untouched (clean stop, work never started): due again at once;
        with ``values``, those columns set too."""
        released = 0
        with self.db.transaction() as session:
            for chunk in chunks(sorted(set(keys))):
                released += self._set(
                    session, owner, chunk, lease_owner=None, lease_expires_at=None, **values
                )
        return released

    def release_all(self, owner: str) -> int:
        """Give back every lease ``owner`` holds (after an outage cut its work short)."""
        with self.db.transaction() as session:
            result = session.execute(
                update(self.table)
                .where(self.owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def fence(
        self, session: Session | Connection, owner: str, key: str, *, until: datetime
    ) -> bool:
        """In ``session``'s transaction: extend the lease if ``owner`` still holds it; False
        if not."""
        result = session.execute(self._fence, {"f_key": key, "f_owner": owner, "f_until": until})
        return int(result.rowcount) == 1  # type: ignore[attr-defined]

    def _set(
        self, session: Session | Connection, owner: str, keys: Sequence[str], **values: object
    ) -> int:
        if not keys:
            return 0
        result = session.execute(
            update(self.table).where(self.key.in_(keys), self.owner == owner).values(**values)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def _dead_processes(stale_before: datetime | BindParameter[datetime]) -> Select[str]:
    """The ids of processes that stopped, or whose last heartbeat is before ``stale_before``."""
    return select(Process.id).where(
        or_(Process.stopped_at.is_not(None), Process.heartbeat_at <= stale_before)
    )


class ProcessRegistry:
    """The ``processes`` table: one row per running worker or reconciler, heartbeated."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def register(self, owner: str, kind: str, *, now: datetime) -> None:
        """This process is alive from ``now``; forgets processes gone for a week."""
        with self.db.transaction() as session:
            session.execute(
                delete(Process).where(Process.heartbeat_at < now - FORGET_PROCESSES_AFTER)
            )
            session.add(
                Process(
                    id=owner,
                    kind=kind,
                    host=socket.gethostname()[:256],
                    pid=os.getpid(),
                    started_at=now,
                    heartbeat_at=now,
                )
            )

    def others_heard(self, owner: str, *, now: datetime, within: timedelta) -> bool:
        """Did a process other than ``owner``, not stopped, beat within ``within`` before
        ``now``? (``core/liveness.py``: a new process may then judge others at once.)"""
        with self.db.transaction() as session:
            found = session.scalar(
                select(Process.id)
                .where(
                    Process.id != owner,
                    Process.stopped_at.is_(None),
                    Process.heartbeat_at > now - within,
                )
                .limit(1)
            )
            return found is not None

    def beat(self, owner: str, *, now: datetime) -> bool:
        """Still alive at ``now``; False if the row is gone (forgotten: register again)."""
        with self.db.transaction() as session:
            result = session.execute(
                update(Process).where(Process.id == owner).values(heartbeat_at=now)
            )
            return int(result.rowcount) == 1  # type: ignore[attr-defined]

    def stopped(self, owner: str, *, now: datetime) -> None:
        """A clean stop: anything it still holds is free at once."""
        with self.db.transaction() as session:
            session.execute(update(Process).where(Process.id == owner).values(stopped_at=now))

"""The shared request budget's row: take tokens, or hold everyone back after a 429.

Each call is one short transaction that locks the row (``FOR UPDATE`` on PostgreSQL;
SQLite transactions begin IMMEDIATE and so take turns), reads the database server's
time in the same statement, applies the pure rule (core/request_budget.py) and
writes the row back. Every process therefore judges the bucket by one clock.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, literal_column, select, update
from sqlalchemy.orm import Session

from orchestrator.core.request_budget import Bucket, BudgetRule, Grant, hold, take
from orchestrator.db.database import Database
from orchestrator.db.models import RequestBudgetRow, table_of
from orchestrator.db.server_time import as_utc, server_now_sql

__all__ = ["BUDGET_SCOPE", "BudgetStore"]

BUDGET_SCOPE = "api"


class BudgetStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def take(self, rule: BudgetRule, want: int) -> Grant:
        """Up to ``want`` tokens now, or how long until one may be taken."""
        with self.db.transaction() as session:
            bucket, now = self._locked(session, rule)
            grant = take(bucket, now, rule, want)
            self._write(session, grant.bucket)
            return grant

    def hold(self, rule: BudgetRule, seconds: float) -> datetime:
        """Nobody sends for ``seconds`` from now (server time); returns until when."""
        with self.db.transaction() as session:
            bucket, now = self._locked(session, rule)
            held = hold(bucket, now, seconds)
            self._write(session, held)
            assert held.held_until is not None
            return held.held_until

    def _locked(self, session: Session, rule: BudgetRule) -> tuple[Bucket, datetime]:
        """The row, locked, and the server's time; a full bucket on first use."""
        query: Select[float, datetime, datetime | None, object] = (
            select(
                RequestBudgetRow.tokens,
                RequestBudgetRow.counted_at,
                RequestBudgetRow.held_until,
                literal_column(server_now_sql(session)).label("server_now"),
            )
            .where(RequestBudgetRow.scope == BUDGET_SCOPE)
            .with_for_update()
        )
        row = session.execute(query).one_or_none()
        if row is None:
            # several processes may start at once: insert-or-ignore, then read it locked
            now = self._now(session)
            session.execute(
                self.db.insert_ignoring_conflicts(table_of(RequestBudgetRow)),
                [{"scope": BUDGET_SCOPE, "tokens": rule.burst, "counted_at": now}],
            )
            row = session.execute(query).one()
        return Bucket(row.tokens, row.counted_at, row.held_until), as_utc(row.server_now)

    def _now(self, session: Session) -> datetime:
        return as_utc(session.scalar(select(literal_column(server_now_sql(session)))))

    @staticmethod
    def _write(session: Session, bucket: Bucket) -> None:
        session.execute(
            update(RequestBudgetRow)
            .where(RequestBudgetRow.scope == BUDGET_SCOPE)
            .values(
                tokens=bucket.tokens,
                counted_at=bucket.counted_at,
                held_until=bucket.held_until,
            )
        )

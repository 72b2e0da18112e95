"""The privacy-budget ledger: charge before release, never overdraw (DESIGN §2.3, §8).

``BudgetLedger.charge`` runs in the transaction of the query's audit entry, the one in
which its answer becomes releasable: it either returns an answer already released for
the identical query (no charge, so averaging repeated answers gains nothing), or
charges the scope with an atomic conditional update and stores the answer. The
condition lives in the UPDATE itself (``spent + cost <= epsilon``), so concurrent
requests in any number of threads, processes or nodes sharing the store cannot
overdraw.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from policies.errors import BudgetExhausted
from policies.scopes import Budget, decimal_str, from_atto, from_nano, to_atto, to_nano
from policies.tables import budget_charges, released_answers, scopes

# Stores an answer unless one is stored for the same query: RETURNING tells which.
_STORE_ANSWER = {
    name: insert(released_answers)
    .on_conflict_do_nothing(index_elements=["scope_id", "query_key"])
    .returning(released_answers.c.query_key)
    for name, insert in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert))
}


@dataclass(frozen=True)
class Release:
    """The outcome of ``charge``: the answer to send and what it cost."""

    answer: dict[str, Any]
    charged: Decimal  # 0 when an identical query's answer was reused
    budget: Budget
    reused: bool


class BudgetLedger:
    """Charges, released answers and budgets of scopes (DESIGN §2.3, §8)."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    def reused(self, scope_id: str, query_key: str) -> dict[str, Any] | None:
        """Return the answer already released for this exact query, or None."""
        with self._engine.connect() as conn:
            return _stored(conn, scope_id, query_key)

    def budget(self, scope_id: str) -> Budget:
        with self._engine.connect() as conn:
            return _budget(conn, scope_id)

    @staticmethod
    def charge(
        conn: sa.Connection,
        *,
        scope_id: str,
        query_key: str,
        epsilon: Decimal,
        delta: Decimal,
        answer: dict[str, Any],
        request_id: str | None,
        audit_index: int,
        now: datetime,
    ) -> Release:
        """Charge ``epsilon`` (and ``delta``) and store ``answer`` as released, on
        ``conn`` (the transaction of the call's audit entry ``audit_index``).

        If the identical query was released before (also concurrently, by another
        process), returns that stored answer without charging. Raises
        ``BudgetExhausted`` before writing anything when the charge would overdraw.
        """
        prior = _stored(conn, scope_id, query_key)
        if prior is not None:
            return Release(prior, Decimal(0), _budget(conn, scope_id), True)
        cost, delta_cost = to_nano(epsilon), to_atto(delta)
        charged = conn.execute(
            scopes.update()
            .where(
                scopes.c.id == scope_id,
                scopes.c.spent_nano + cost <= scopes.c.epsilon_nano,
                scopes.c.delta_spent_atto + delta_cost <= scopes.c.delta_atto,
            )
            .values(
                spent_nano=scopes.c.spent_nano + cost,
                delta_spent_atto=scopes.c.delta_spent_atto + delta_cost,
            )
        ).rowcount
        if charged != 1:
            b = _budget(conn, scope_id)
            if b.spent + epsilon > b.epsilon:
                raise exhausted(scope_id, b, epsilon)
            raise BudgetExhausted(
                f"scope {scope_id!r} has not enough delta left for this query",
                {"scope": scope_id, "budget": b.to_dict()},
            )
        stored = conn.execute(
            _STORE_ANSWER[conn.dialect.name],
            {
                "scope_id": scope_id,
                "query_key": query_key,
                "answer": json.dumps(answer, sort_keys=True),
                "created_at": now,
            },
        ).first()
        if stored is None:
            # Released meanwhile by a writer outside this transaction's lock (only
            # possible on PostgreSQL): take the charge back and send that answer.
            conn.execute(
                scopes.update()
                .where(scopes.c.id == scope_id)
                .values(
                    spent_nano=scopes.c.spent_nano - cost,
                    delta_spent_atto=scopes.c.delta_spent_atto - delta_cost,
                )
            )
            again = _stored(conn, scope_id, query_key)
            assert again is not None
            return Release(again, Decimal(0), _budget(conn, scope_id), True)
        conn.execute(
            budget_charges.insert().values(
                scope_id=scope_id,
                epsilon_nano=cost,
                delta_atto=delta_cost,
                query_key=query_key,
                request_id=request_id,
                audit_index=audit_index,
                created_at=now,
            )
        )
        return Release(answer, epsilon, _budget(conn, scope_id), False)

    def forget_releases(self, before: datetime) -> int:
        """Delete the stored answers released before ``before``; return how many.

        An identical request after that is a new release, charged again in full: a
        repeat past the retention costs budget like any other release, which the
        ledger's charges (kept for ever) account for, so averaging gains nothing it did
        not pay for.
        """
        with self._engine.begin() as conn:
            result = conn.execute(
                released_answers.delete().where(released_answers.c.created_at < before)
            )
        return int(result.rowcount or 0)

    def charges(self, scope_id: str) -> list[dict[str, Any]]:
        """Return the scope's charges in order, for regulators."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(budget_charges)
                .where(budget_charges.c.scope_id == scope_id)
                .order_by(budget_charges.c.id)
            ).all()
        return [
            {
                "epsilon": decimal_str(from_nano(int(r.epsilon_nano))),
                "delta": decimal_str(from_atto(int(r.delta_atto))),
                "audit_index": r.audit_index,
                "request_id": r.request_id,
                "time": r.created_at.isoformat(),
            }
            for r in rows
        ]

    def history(self, *, enterprise: str | None = None) -> list[dict[str, Any]]:
        """Return every charge in time order with its scope's enterprise and product
        (``enterprise``: only that enterprise's), for budget-over-time views."""
        c = budget_charges
        query = (
            sa.select(
                c.c.scope_id,
                c.c.epsilon_nano,
                c.c.audit_index,
                c.c.created_at,
                scopes.c.enterprise,
                scopes.c.product,
            )
            .join(scopes, scopes.c.id == c.c.scope_id)
            .order_by(c.c.id)
        )
        if enterprise is not None:
            query = query.where(scopes.c.enterprise == enterprise)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            {
                "scope": r.scope_id,
                "enterprise": r.enterprise,
                "product": r.product,
                "epsilon": decimal_str(from_nano(int(r.epsilon_nano))),
                "audit_index": r.audit_index,
                "time": r.created_at.isoformat(),
            }
            for r in rows
        ]


def exhausted(scope_id: str, budget: Budget, cost: Decimal) -> BudgetExhausted:
    # As Scope.check_affordable words it, for a budget read at commit.
    return BudgetExhausted(
        f"scope {scope_id!r} has {decimal_str(budget.remaining)} epsilon left; "
        f"this query needs {decimal_str(cost)}",
        {"scope": scope_id, "budget": budget.to_dict(), "requested": float(cost)},
    )


def _stored(conn: sa.Connection, scope_id: str, query_key: str) -> dict[str, Any] | None:
    row = conn.execute(
        sa.select(released_answers.c.answer).where(
            released_answers.c.scope_id == scope_id,
            released_answers.c.query_key == query_key,
        )
    ).first()
    return json.loads(row.answer) if row else None


def _budget(conn: sa.Connection, scope_id: str) -> Budget:
    row = conn.execute(
        sa.select(
            scopes.c.epsilon_nano,
            scopes.c.spent_nano,
            scopes.c.delta_atto,
            scopes.c.delta_spent_atto,
        ).where(scopes.c.id == scope_id)
    ).one()
    return Budget(
        from_nano(int(row.epsilon_nano)),
        from_nano(int(row.spent_nano)),
        from_atto(int(row.delta_atto)),
        from_atto(int(row.delta_spent_atto)),
    )

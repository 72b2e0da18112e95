"""The privacy-budget ledger: charge before release, never overdraw (DESIGN §2.3, §8).

``BudgetLedger.release`` is the one transaction in which a query's answer becomes
releasable: it either returns an answer already released for the identical query
(no charge, so averaging repeated answers gains nothing), or charges the scope with
an atomic conditional update and stores the answer. The condition lives in the
UPDATE itself (``spent + cost <= epsilon``), so concurrent requests in any number
of threads, processes or nodes sharing the store cannot overdraw.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from policies.errors import BudgetExhausted, OperationNotAllowed
from policies.scopes import Budget, Scope, decimal_str, from_atto, from_nano, to_nano
from policies.tables import budget_charges, released_answers, scopes
from products.transactions import read_then_write

# Stores an answer unless one is stored for the same query: RETURNING tells which.
_STORE_ANSWER = {
    name: insert(released_answers)
    .on_conflict_do_nothing(index_elements=["scope_id", "query_key"])
    .returning(released_answers.c.query_key)
    for name, insert in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert))
}


@dataclass(frozen=True)
class Release:
    """The outcome of ``release``: the answer to send and what it cost."""

    answer: dict[str, Any]
    charged_nano: int  # 0 when an identical query's answer was reused
    charge_id: int | None
    budget: Budget
    reused: bool


class BudgetLedger:
    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    def check_affordable(self, scope: Scope, cost_nano: int, delta_atto: int = 0) -> None:
        """Refuse early (before any work) a cost above the per-query cap or the remainder.

        Raises ``OperationNotAllowed`` or ``BudgetExhausted``. Only advisory: the
        binding check is the conditional update in ``release``.
        """
        if cost_nano > scope.max_epsilon_per_query_nano:
            raise OperationNotAllowed(
                f"epsilon {decimal_str(from_nano(cost_nano))} exceeds this scope's "
                f"max_epsilon_per_query {decimal_str(scope.max_epsilon_per_query)}",
                {"scope": scope.id, "max_epsilon_per_query": float(scope.max_epsilon_per_query)},
            )
        if scope.spent_nano + cost_nano > scope.epsilon_nano:
            raise self._exhausted(scope.id, scope.epsilon_nano, scope.spent_nano, cost_nano)
        if scope.delta_spent_atto + delta_atto > scope.delta_atto:
            raise self._delta_exhausted(scope, delta_atto)

    @staticmethod
    def _delta_exhausted(scope: Scope, delta_atto: int) -> BudgetExhausted:
        left = max(scope.delta_atto - scope.delta_spent_atto, 0)
        return BudgetExhausted(
            f"scope {scope.id!r} has delta {decimal_str(from_atto(left))} left; this query "
            f"needs {decimal_str(from_atto(delta_atto))}",
            {"scope": scope.id, "budget": scope.budget.to_dict()},
        )

    @staticmethod
    def _exhausted(scope_id: str, total: int, spent: int, cost: int) -> BudgetExhausted:
        remaining = max(total - spent, 0)
        return BudgetExhausted(
            f"scope {scope_id!r} has {decimal_str(from_nano(remaining))} epsilon left; "
            f"this query needs {decimal_str(from_nano(cost))}",
            {
                "scope": scope_id,
                "budget": Budget(from_nano(total), from_nano(spent)).to_dict(),
                "requested": float(from_nano(cost)),
            },
        )

    def reused(self, scope_id: str, query_key: str) -> dict[str, Any] | None:
        """Return the answer already released for this exact query, or None."""
        with self._engine.connect() as conn:
            return self._stored(conn, scope_id, query_key)

    def budget(self, scope_id: str) -> Budget:
        with self._engine.connect() as conn:
            return self._budget_in(conn, scope_id)

    def release(
        self,
        scope_id: str,
        query_key: str,
        cost_nano: int,
        answer: dict[str, Any],
        request_id: str | None,
        delta_atto: int = 0,
    ) -> Release:
        """Charge ``cost_nano`` and record ``answer`` as released, in one transaction.

        If the identical query was released before (also concurrently, by another
        process), returns that stored answer without charging. Raises
        ``BudgetExhausted`` when the charge would overdraw; then nothing is stored.
        """
        with read_then_write(self._engine) as conn:
            return self.release_in(
                conn, scope_id, query_key, cost_nano, answer, request_id, delta_atto, self._clock()
            )

    @classmethod
    def release_in(
        cls,
        conn: sa.Connection,
        scope_id: str,
        query_key: str,
        cost_nano: int,
        answer: dict[str, Any],
        request_id: str | None,
        delta_atto: int,
        now: datetime,
    ) -> Release:
        """``release`` inside the caller's transaction (e.g. the audit append's).

        Raises ``BudgetExhausted`` before writing anything, so the caller's transaction
        can go on with its other work.
        """
        prior = cls._stored(conn, scope_id, query_key)
        if prior is not None:
            return Release(prior, 0, None, cls._budget_in(conn, scope_id), True)
        charged = conn.execute(
            scopes.update()
            .where(
                scopes.c.id == scope_id,
                scopes.c.spent_nano + cost_nano <= scopes.c.epsilon_nano,
                scopes.c.delta_spent_atto + delta_atto <= scopes.c.delta_atto,
            )
            .values(
                spent_nano=scopes.c.spent_nano + cost_nano,
                delta_spent_atto=scopes.c.delta_spent_atto + delta_atto,
            )
        ).rowcount
        if charged != 1:
            b = cls._budget_in(conn, scope_id)
            if b.spent + from_nano(cost_nano) > b.epsilon:
                raise cls._exhausted(scope_id, to_nano(b.epsilon), to_nano(b.spent), cost_nano)
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
                    spent_nano=scopes.c.spent_nano - cost_nano,
                    delta_spent_atto=scopes.c.delta_spent_atto - delta_atto,
                )
            )
            again = cls._stored(conn, scope_id, query_key)
            assert again is not None
            return Release(again, 0, None, cls._budget_in(conn, scope_id), True)
        charge_id = conn.execute(
            budget_charges.insert().values(
                scope_id=scope_id,
                epsilon_nano=cost_nano,
                delta_atto=delta_atto,
                query_key=query_key,
                request_id=request_id,
                created_at=now,
            )
        ).inserted_primary_key
        return Release(
            answer,
            cost_nano,
            int(charge_id[0]) if charge_id else None,
            cls._budget_in(conn, scope_id),
            False,
        )

    @staticmethod
    def _stored(conn: sa.Connection, scope_id: str, query_key: str) -> dict[str, Any] | None:
        row = conn.execute(
            sa.select(released_answers.c.answer).where(
                released_answers.c.scope_id == scope_id,
                released_answers.c.query_key == query_key,
            )
        ).first()
        return json.loads(row.answer) if row else None

    @staticmethod
    def _budget_in(conn: sa.Connection, scope_id: str) -> Budget:
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

    def link_audit(self, charge_id: int, audit_index: int) -> None:
        """Record which audit entry a charge belongs to."""
        with self._engine.begin() as conn:
            conn.execute(
                budget_charges.update()
                .where(budget_charges.c.id == charge_id)
                .values(audit_index=audit_index)
            )

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

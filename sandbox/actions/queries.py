"""DP queries and previews (DESIGN §5, §8): validate, plan, charge, release.

The order of one query is fixed by the invariants:
1. count the call against the scope's rate and quota (refused calls count too);
2. check the scope (status, validity, operation, per-query cap, caller owns it);
3. parse and plan the SQL (refusals name the clause and the rule);
4. an identical query (scope, normalised SQL, epsilon, data version) already released
   returns the stored answer without a charge — averaging repeats gains nothing;
5. otherwise refuse early if the budget cannot cover it, run the rewritten SQL in
   the isolated engine, add OpenDP noise, and charge the budget and store the answer
   in the transaction that appends the call's audit entry (``QueryRelease``,
   ``BudgetLedger.release_in``): no charge without its entry, no answer without its
   charge; only then is it returned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from sqlalchemy.engine import Connection

from policies.budget import BudgetLedger, Release
from policies.errors import BudgetExhausted, OperationNotAllowed
from policies.principals import Principal
from policies.scopes import (
    Budget,
    Scope,
    ScopeStatus,
    ScopeStore,
    decimal_str,
    from_atto,
    from_nano,
    parse_epsilon,
    to_atto,
    to_nano,
)
from products.errors import InvalidRequest, NotFound
from sandbox.actions.at_commit import AtCommit, Render, unusable
from sandbox.actions.note import AuditNote
from sandbox.engine import EngineLimits, PreparedQuery, execute, prepare
from sandbox.engine.plan import OutputKind
from sandbox.runtime import Runtime

FUNCTION_OF_KIND = {
    OutputKind.COUNT: "count",
    OutputKind.SUM: "sum",
    OutputKind.AVG: "avg",
    OutputKind.QUANTILE: "quantile",
}
MAX_SQL_CHARS = 20_000


DEFAULT_DELTA_SHARE = Decimal(10)  # a query may use 1/10 of the scope's delta by default


@dataclass(frozen=True)
class QueryRequest:
    scope: str
    sql: str
    epsilon: Decimal
    delta: Decimal | None = None  # extension: delta for unknown group keys (threshold)


def parse_query_request(data: Mapping[str, Any]) -> QueryRequest:
    """Validate ``{scope, sql, epsilon}``. Raises ``InvalidRequest`` naming fields."""
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(data) - {"scope", "sql", "epsilon", "delta"})
    if unknown:
        errors["_schema"] = [f"unknown field(s): {', '.join(unknown)}"]
    scope = data.get("scope")
    if not isinstance(scope, str) or not scope:
        errors["scope"] = ["required: the scope id"]
    sql = data.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        errors["sql"] = ["required: one SELECT statement"]
    elif len(sql) > MAX_SQL_CHARS:
        errors["sql"] = [f"at most {MAX_SQL_CHARS} characters"]
    epsilon = Decimal(0)
    try:
        epsilon = parse_epsilon(data.get("epsilon"), "epsilon")
    except InvalidRequest as exc:
        errors.update(exc.details.get("fields", {}))
    delta: Decimal | None = None
    raw_delta = data.get("delta")
    if raw_delta is not None:
        try:
            if isinstance(raw_delta, bool) or not isinstance(raw_delta, int | float | str):
                raise InvalidOperation
            delta = Decimal(str(raw_delta))
            if not delta.is_finite() or delta < 0 or delta != delta.quantize(Decimal("1e-18")):
                raise InvalidOperation
        except InvalidOperation:
            errors["delta"] = ["a number ≥ 0 with at most 18 decimal places"]
    if errors:
        raise InvalidRequest("invalid query request", {"fields": errors})
    assert isinstance(scope, str) and isinstance(sql, str)
    return QueryRequest(scope, sql, epsilon, delta)


def query_delta(scope: Scope, req: QueryRequest) -> Decimal:
    """The delta this query may use for unknown group keys: what the caller asked for
    (at most the scope's remaining delta), by default a tenth of the scope's delta.

    Raises ``BudgetExhausted`` when the request asks for more than is left.
    """
    left = from_atto(max(scope.delta_atto - scope.delta_spent_atto, 0))
    if req.delta is None:
        share = (scope.delta / DEFAULT_DELTA_SHARE).quantize(Decimal("1e-18"), ROUND_DOWN)
        return Decimal(min(share, left))
    if req.delta > left:
        raise BudgetExhausted(
            f"scope {scope.id!r} has delta {decimal_str(left)} left; asked for "
            f"{decimal_str(req.delta)}",
            {"scope": scope.id, "budget": scope.budget.to_dict()},
        )
    return Decimal(req.delta)


def usable_scope(
    rt: Runtime, caller: Principal, scope_id: str, note: AuditNote, *, calls: int = 1
) -> Scope:
    """Return the caller's scope after counting the call(s) and checking it is usable.

    Raises ``NotFound`` (not the caller's scope), ``RateLimited``/``QuotaExceeded``,
    ``ScopeRevoked``/``ScopeSuspended``/``ScopeExpired``.
    """
    scope = rt.scopes.get(scope_id)
    if scope.enterprise != caller.id:
        raise NotFound(f"no scope {scope_id!r}", {"scope": scope_id})
    note.target.update({"scope": scope.id, "product": scope.product})
    note.extra["policy_version"] = scope.terms_hash
    rt.limiter.count(scope, calls)
    scope.check_usable(rt.clock())
    return scope


def _prepared(
    rt: Runtime, scope: Scope, req: QueryRequest, note: AuditNote
) -> tuple[PreparedQuery, int]:
    if scope.aggregate_columns is None:
        raise OperationNotAllowed(
            f"scope {scope.id!r} does not grant aggregate queries", {"scope": scope.id}
        )
    cost = to_nano(req.epsilon)
    if cost > scope.max_epsilon_per_query_nano:
        raise OperationNotAllowed(
            f"epsilon {decimal_str(req.epsilon)} exceeds this scope's max_epsilon_per_query "
            f"{decimal_str(scope.max_epsilon_per_query)}",
            {"scope": scope.id, "max_epsilon_per_query": float(scope.max_epsilon_per_query)},
        )
    record = rt.catalogue.get(scope.product)
    if record.current is None:
        raise NotFound(f"product {record.id!r} has no data loaded yet", {"product": record.id})
    note.extra["sql_hash"] = hashlib.sha256(req.sql.encode()).hexdigest()
    note.extra["product_version"] = record.current.version
    prepared = prepare(
        record.manifest,
        req.sql,
        allowed_columns=scope.aggregate_columns,
        delta=query_delta(scope, req),
        epsilon=req.epsilon,
    )
    note.extra["rewritten_sql_hash"] = hashlib.sha256(prepared.rewritten_sql.encode()).hexdigest()
    used = {FUNCTION_OF_KIND[o.kind] for o in prepared.plan.outputs if o.kind in FUNCTION_OF_KIND}
    refused = sorted(used - scope.aggregate_functions)
    if refused:
        raise OperationNotAllowed(
            f"scope {scope.id!r} does not grant {', '.join(refused)}; it grants "
            f"{', '.join(sorted(scope.aggregate_functions)) or 'no aggregate functions'}",
            {"scope": scope.id},
        )
    return prepared, record.current.version


def preview(
    rt: Runtime, caller: Principal, data: Mapping[str, Any], note: AuditNote
) -> dict[str, Any]:
    """Return ``{"epsilon", "accuracy"}`` for the query; nothing is spent or run."""
    req = parse_query_request(data)
    scope = usable_scope(rt, caller, req.scope, note)
    prepared, _ = _prepared(rt, scope, req, note)
    return {"epsilon": float(req.epsilon), "accuracy": prepared.accuracy()}


def run_query(
    rt: Runtime, caller: Principal, data: Mapping[str, Any], note: AuditNote, render: Render
) -> dict[str, Any]:
    """Return the DP answer of DESIGN §5 (without its receipt, which the edge adds).

    Raises the refusals of ``usable_scope`` and ``prepare``, ``OperationNotAllowed``,
    ``BudgetExhausted`` and ``QueryFailed``.
    """
    req = parse_query_request(data)
    scope = usable_scope(rt, caller, req.scope, note)
    prepared, version = _prepared(rt, scope, req, note)
    cost = to_nano(req.epsilon)
    delta_cost = to_atto(Decimal(repr(prepared.delta_spent))) if prepared.delta_spent else 0
    query_key = hashlib.sha256(
        f"{prepared.normalized_sql}\n{decimal_str(req.epsilon)}\n{delta_cost}\n{version}".encode()
    ).hexdigest()
    note.extra["query_key"] = query_key
    released = rt.ledger.reused(scope.id, query_key)
    if released is not None:
        note.extra["reused"] = True
        return _answer(released, Decimal(0), rt.ledger.budget(scope.id).to_dict())
    rt.ledger.check_affordable(scope, cost, delta_cost)
    limits = EngineLimits(
        timeout_s=rt.settings.query_timeout_s,
        memory_limit=rt.settings.query_memory_limit,
        threads=rt.settings.query_threads,
    )
    answer = execute(
        prepared,
        rt.catalogue.data_path(rt.catalogue.get(scope.product)),
        limits,
        runner=rt.query_runner(),
    )
    stored = {"columns": answer.columns, "rows": answer.rows, "accuracy": answer.accuracy}
    # Charged in the transaction that records the call (sandbox/actions/at_commit.py):
    # no charge without its entry, and no answer without its charge.
    now_spent = rt.ledger.budget(scope.id)
    foreseen = Budget(
        now_spent.epsilon,
        now_spent.spent + from_nano(cost),
        now_spent.delta,
        now_spent.delta_spent + from_atto(delta_cost),
    )
    predicted = _answer(stored, req.epsilon, foreseen.to_dict())
    release = QueryRelease(
        scope, query_key, cost, delta_cost, stored, note.request_id, rt.clock(), render
    )
    release.predicted = predicted
    note.effect = release
    note.epsilon = decimal_str(req.epsilon)
    if delta_cost:
        note.extra["delta"] = decimal_str(from_atto(delta_cost))
    note.after_append.append(lambda index: release.link(rt, index))
    return predicted


class QueryRelease(AtCommit):
    """Charges the budget and stores the answer when the call's entry commits
    (``BudgetLedger.release_in``): refused if the scope was suspended or revoked
    meanwhile (its status is read again at commit) or with ``budget_exhausted`` if
    others spent the budget meanwhile; answered from the stored release if an
    identical query was released meanwhile (then nothing is charged and the entry says
    so)."""

    def __init__(
        self,
        scope: Scope,
        query_key: str,
        cost_nano: int,
        delta_atto: int,
        stored: dict[str, Any],
        request_id: str | None,
        now: datetime,
        render: Render,
    ) -> None:
        super().__init__(render)
        self.scope = scope
        self.query_key = query_key
        self.cost_nano = cost_nano
        self.delta_atto = delta_atto
        self.stored = stored
        self.request_id = request_id
        self.now = now
        self.predicted: dict[str, Any] = {}
        self.outcome: Release | None = None

    @classmethod
    def apply_all(cls, conn: Connection, effects: Sequence[Any]) -> None:
        statuses = ScopeStore.status_in(conn, {e.scope.id for e in effects})
        for e in effects:
            status, reason = statuses.get(e.scope.id, (ScopeStatus.REVOKED, None))
            e.refusal = unusable(e.scope, status, reason, e.now)
            if e.refusal is not None:
                continue
            try:
                e.outcome = BudgetLedger.release_in(
                    conn,
                    e.scope.id,
                    e.query_key,
                    e.cost_nano,
                    e.stored,
                    e.request_id,
                    e.delta_atto,
                    e.now,
                )
            except BudgetExhausted as exc:
                e.refusal = exc
                continue
            o = e.outcome
            spent = from_nano(o.charged_nano)
            final = _answer(o.answer, spent, o.budget.to_dict())
            if final != e.predicted:
                e.replacement = final

    def entry_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        fields = super().entry_fields(fields)
        if self.outcome is not None and self.outcome.reused:
            fields = {k: v for k, v in fields.items() if k != "delta"}
            fields.update(epsilon="0", reused=True)
        return fields

    def link(self, rt: Runtime, index: int) -> None:
        """Record the charge's audit index (after the commit; the entry's ``query_key``
        links them as well)."""
        if self.outcome is not None and self.outcome.charge_id is not None:
            rt.ledger.link_audit(self.outcome.charge_id, index)


def _answer(stored: Mapping[str, Any], spent: Decimal, budget: dict[str, float]) -> dict[str, Any]:
    return {
        "columns": stored["columns"],
        "rows": stored["rows"],
        "epsilon_spent": float(spent),
        "budget": budget,
        "accuracy": stored["accuracy"],
    }

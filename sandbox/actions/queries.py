"""DP queries and previews (DESIGN §5, §8): validate, plan, charge, release.

The order of one query is fixed by the invariants:
1. count the call against the scope's rate and quota (refused calls count too);
2. check the scope (status, validity, operation, per-query cap, caller owns it);
3. parse and plan the SQL (refusals name the clause and the rule);
4. an identical query (scope, normalised SQL, epsilon, data version) already released
   returns the stored answer without a charge — averaging repeats gains nothing;
5. otherwise refuse early if the budget cannot cover it, run the rewritten SQL in
   the isolated engine, add OpenDP noise, and in ONE transaction charge the budget
   and store the answer (``BudgetLedger.release``); only then is it returned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from policies.errors import BudgetExhausted, OperationNotAllowed
from policies.principals import Principal
from policies.scopes import Scope, decimal_str, from_atto, parse_epsilon, to_atto, to_nano
from products.errors import InvalidRequest, NotFound
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
    rt: Runtime, caller: Principal, data: Mapping[str, Any], note: AuditNote
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
    release = rt.ledger.release(
        scope.id, query_key, cost, stored, note.request_id, delta_atto=delta_cost
    )
    if release.reused:
        note.extra["reused"] = True
        return _answer(release.answer, Decimal(0), release.budget.to_dict())
    note.epsilon = decimal_str(req.epsilon)
    if delta_cost:
        note.extra["delta"] = decimal_str(from_atto(delta_cost))
    charge_id = release.charge_id
    if charge_id is not None:
        note.after_append.append(lambda index: rt.ledger.link_audit(charge_id, index))
    return _answer(release.answer, req.epsilon, release.budget.to_dict())


def _answer(stored: Mapping[str, Any], spent: Decimal, budget: dict[str, float]) -> dict[str, Any]:
    return {
        "columns": stored["columns"],
        "rows": stored["rows"],
        "epsilon_spent": float(spent),
        "budget": budget,
        "accuracy": stored["accuracy"],
    }

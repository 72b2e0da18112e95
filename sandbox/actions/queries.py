"""DP queries and previews (DESIGN §5, §8): validate, plan, charge, release.

The order of one query is fixed by the invariants:
1. the caller must own the scope; the call then counts against its rate and quota
   (refused calls count too: at commit, ``sandbox/actions/call.py``);
2. check the scope (validity, operation, per-query cap) and plan the SQL (refusals
   name the clause and the rule);
3. an identical query (scope, normalised SQL, epsilon, delta, data version) already
   released returns the stored answer without a charge — averaging repeats gains
   nothing;
4. otherwise refuse early if the budget cannot cover it, run the rewritten SQL in
   the isolated engine and add OpenDP noise;
5. at commit, in the transaction of the call's audit entry: confirm the scope's
   status, charge the budget and store the answer (``BudgetLedger.charge``) — no
   charge without its entry, no answer without its charge.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate

from audit.log import LogTransaction
from policies.budget import BudgetLedger
from policies.errors import BudgetExhausted, OperationNotAllowed
from policies.principals import Principal
from policies.scopes import (
    MAX_QUERY_EPSILON,
    DeltaField,
    EpsilonField,
    Scope,
    decimal_str,
    from_atto,
)
from products.errors import NotFound, TooLarge
from sandbox.actions.call import Answer, Apply, Pending
from sandbox.engine import EngineLimits, PreparedQuery, execute, prepare
from sandbox.errors import ColumnNotAllowed
from sandbox.runtime import Runtime

MAX_SQL_CHARS = 20_000


DEFAULT_DELTA_SHARE = Decimal(10)  # a query may use 1/10 of the scope's delta by default


@dataclass(frozen=True)
class QueryRequest:
    scope: str
    sql: str
    epsilon: Decimal
    delta: Decimal | None = None  # extension: delta for unknown group keys (threshold)


class QueryRequestSchema(Schema):
    """``{scope, sql, epsilon, delta?}`` (DESIGN §5) → :class:`QueryRequest`."""

    class Meta:
        unknown = RAISE

    scope = fields.String(required=True, validate=validate.Length(min=1, max=64))
    sql = fields.String(required=True, validate=validate.Length(min=1, max=MAX_SQL_CHARS))
    epsilon = EpsilonField(required=True, maximum=MAX_QUERY_EPSILON)
    delta = DeltaField(metadata={"description": "extension: delta for unknown group keys"})

    @post_load
    def _request(self, data: dict[str, Any], **_: Any) -> QueryRequest:
        if not data["sql"].strip():
            raise ValidationError({"sql": ["required: one SELECT statement"]})
        return QueryRequest(data["scope"], data["sql"], data["epsilon"], data.get("delta"))


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


def owned_scope(rt: Runtime, caller: Principal, scope_id: str, *, cached: bool = False) -> Scope:
    """Return the caller's scope ``scope_id``. Raises ``NotFound`` (also for another
    enterprise's scope, so ids do not leak). ``cached``: as read up to a second ago
    (terms never change; the status is confirmed at commit)."""
    scope = rt.scopes.cached(scope_id) if cached else rt.scopes.get(scope_id)
    if scope.enterprise != caller.id:
        raise NotFound(f"no scope {scope_id!r}", {"scope": scope_id})
    return scope


def under_scope(action: str, scope: Scope, **fields: Any) -> Pending:
    """The pending call ``action`` counted against ``scope`` (its rate and quota, its
    status checked at commit), recording the scope's policy version."""
    return Pending(
        action,
        target={"scope": scope.id, "product": scope.product},
        fields={"policy_version": scope.terms_hash, **fields},
        scope=scope,
    )


def _prepared(rt: Runtime, scope: Scope, req: QueryRequest) -> tuple[PreparedQuery, int, Decimal]:
    """Plan ``req`` under ``scope``; return the plan, the data version it reads and the
    delta it may spend. Raises the refusals of planning."""
    scope.check_usable(rt.clock())
    if scope.aggregate_columns is None:
        raise OperationNotAllowed(
            f"scope {scope.id!r} does not grant aggregate queries", {"scope": scope.id}
        )
    scope.check_epsilon(req.epsilon)
    record = rt.catalogue.get(scope.product)
    if record.current is None:
        raise NotFound(f"product {record.id!r} has no data loaded yet", {"product": record.id})
    delta = query_delta(scope, req)
    try:
        prepared = prepare(
            record.manifest,
            req.sql,
            allowed_columns=scope.aggregate_columns,
            delta=delta,
            epsilon=req.epsilon,
        )
    except ColumnNotAllowed as exc:
        if exc.details.get("rule") == "public_values_or_delta" and scope.delta_atto > 0:
            # The scope grants delta, but none is left: a budget refusal, not a rule.
            raise BudgetExhausted(
                f"scope {scope.id!r} has no delta left for the unknown keys of "
                f"{exc.details.get('column')!r}",
                {"scope": scope.id, "budget": scope.budget.to_dict()},
            ) from None
        raise
    refused = sorted(prepared.functions_used - scope.aggregate_functions)
    if refused:
        raise OperationNotAllowed(
            f"scope {scope.id!r} does not grant {', '.join(refused)}; it grants "
            f"{', '.join(sorted(scope.aggregate_functions)) or 'no aggregate functions'}",
            {"scope": scope.id},
        )
    return prepared, record.current.version, delta if prepared.delta_spent else Decimal(0)


def _sql_fields(req: QueryRequest) -> dict[str, Any]:
    return {"sql_hash": hashlib.sha256(req.sql.encode()).hexdigest()}


def preview(rt: Runtime, caller: Principal, req: QueryRequest) -> Pending:
    """``query.preview``: ``{"epsilon", "accuracy"}`` for the query; nothing is spent or
    run. Raises ``NotFound`` for a scope that is not the caller's."""
    scope = owned_scope(rt, caller, req.scope)
    pending = under_scope("query.preview", scope, **_sql_fields(req))

    def build() -> Pending:
        prepared, _, _ = _prepared(rt, scope, req)
        body = {"epsilon": float(req.epsilon), "accuracy": prepared.accuracy()}
        return dataclasses.replace(pending, answer=Answer(body))

    return pending.attempt(build)


def run_query(
    rt: Runtime, caller: Principal, req: QueryRequest, *, request_id: str | None = None
) -> Pending:
    """``query.aggregate``: the DP answer of DESIGN §5 (the edge adds its receipt).

    An identical query already released answers from the store without a charge;
    otherwise the rewritten SQL runs in the isolated engine, OpenDP adds the noise,
    and at commit the budget is charged and the answer stored (``BudgetLedger.charge``)
    — or the call is refused if others spent the budget meanwhile, or answered from an
    identical release made meanwhile. Raises ``NotFound`` for a scope that is not the
    caller's; every other refusal is the returned call's.
    """
    scope = owned_scope(rt, caller, req.scope)
    pending = dataclasses.replace(
        under_scope("query.aggregate", scope, **_sql_fields(req)),
        receipt=True,
        request_id=request_id,
    )

    def build() -> Pending:
        prepared, version, delta = _prepared(rt, scope, req)
        query_key = hashlib.sha256(
            f"{prepared.normalized_sql}\n{decimal_str(req.epsilon)}\n{decimal_str(delta)}\n"
            f"{version}".encode()
        ).hexdigest()
        fields = {
            **pending.fields,
            "product_version": version,
            "rewritten_sql_hash": hashlib.sha256(prepared.rewritten_sql.encode()).hexdigest(),
            "query_key": query_key,
        }
        stored = rt.ledger.reused(scope.id, query_key)
        if stored is None:
            scope.check_affordable(req.epsilon, delta)
            limits = EngineLimits(
                timeout_s=rt.settings.query_timeout_s,
                memory_limit=rt.settings.query_memory_limit,
                threads=rt.settings.query_threads,
            )
            record = rt.catalogue.get(scope.product)
            answer = execute(
                prepared,
                rt.catalogue.data_path(record),
                limits,
                runner=rt.query_runner(),
                tenant=scope.enterprise,
            )
            stored = {"columns": answer.columns, "rows": answer.rows, "accuracy": answer.accuracy}
            size = len(json.dumps(stored))
            if size > rt.settings.max_release_bytes:
                raise TooLarge(
                    f"the answer holds {size:,} bytes; a release may hold at most "
                    f"{rt.settings.max_release_bytes:,} (fewer groups or statistics)",
                    {"rule": "max_release_bytes", "limit": rt.settings.max_release_bytes},
                )
        release = _release(scope.id, query_key, req.epsilon, delta, stored, request_id, rt)
        return dataclasses.replace(pending, fields=fields, apply=release)

    return pending.attempt(build)


def _release(
    scope_id: str,
    query_key: str,
    epsilon: Decimal,
    delta: Decimal,
    stored: dict[str, Any],
    request_id: str | None,
    rt: Runtime,
) -> Apply:
    def apply(tx: LogTransaction) -> Answer:
        release = BudgetLedger.charge(
            tx.conn,
            scope_id=scope_id,
            query_key=query_key,
            epsilon=epsilon,
            delta=delta,
            answer=stored,
            request_id=request_id,
            audit_index=tx.index,
            now=rt.clock(),
        )
        body = {
            "columns": release.answer["columns"],
            "rows": release.answer["rows"],
            "epsilon_spent": float(release.charged),
            "budget": release.budget.to_dict(),
            "accuracy": release.answer["accuracy"],
        }
        if release.reused:
            return Answer(body, fields={"reused": True})
        extra = {"delta": decimal_str(delta)} if delta else {}
        return Answer(body, epsilon=release.charged, fields=extra)

    return apply

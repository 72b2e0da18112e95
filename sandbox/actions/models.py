"""Sandbox model development (DESIGN §11.1, §11.2): DP synthetic data and DP training.

Each call is one audited action shaped like a DP query (``sandbox/actions/queries.py``):

1. the caller must own the scope; the call counts against its rate and quota;
2. the scope must grant the operation (``synthetic`` / ``train``), the columns must
   be among its aggregate columns, the epsilon within its per-release cap, the
   request well formed (refusals name the field);
3. an identical request (same scope, request, data version) already released returns
   the stored release without a charge;
4. otherwise the worker pool runs the SQL over the contribution-bounded rows and the
   DP release step (OpenDP) in one isolated worker: only DP outputs leave it;
5. at commit, in the transaction of the entry, ``BudgetLedger.charge`` charges the
   epsilon and stores the release — or refuses if others spent the budget meanwhile,
   or answers from an identical release made meanwhile.

Previews say what a request would cost and how accurate its statistics would be,
from the plan alone: nothing is run or spent.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import secrets
from decimal import Decimal
from typing import Any

from audit.log import LogTransaction
from policies.budget import BudgetLedger
from policies.errors import OperationNotAllowed
from policies.principals import Principal
from policies.scopes import Scope, decimal_str
from products.catalogue import ProductRecord
from products.errors import Conflict, NotFound
from sandbox.actions.call import Answer, Apply, Pending
from sandbox.actions.queries import owned_scope, under_scope
from sandbox.engine.isolation import EngineLimits
from sandbox.engine.synthesis import SynthesisPlan, synthesize
from sandbox.models import linear, scorecard
from sandbox.models import synthetic as synth
from sandbox.models.encoding import counts_sql
from sandbox.models.linear import LinearPlan
from sandbox.models.requests import (
    SyntheticRequest,
    TrainRequest,
    synthetic_plan,
    training_plan,
)
from sandbox.models.scorecard import ScorecardPlan
from sandbox.runtime import Runtime


def _granted(rt: Runtime, scope: Scope, product_id: str, operation: str) -> ProductRecord:
    """Check that ``scope`` grants ``operation`` on ``product_id``; return the product.
    Raises ``OperationNotAllowed``, the scope's status refusals, ``NotFound``."""
    scope.check_usable(rt.clock())
    granted = scope.synthetic if operation == "synthetic" else scope.train
    if not granted or scope.product != product_id:
        raise OperationNotAllowed(
            f"scope {scope.id!r} does not grant {operation} on {product_id!r}",
            {"scope": scope.id, "operation": operation},
        )
    record = rt.catalogue.get(product_id)
    if record.current is None:
        raise NotFound(f"product {record.id!r} has no data loaded yet", {"product": record.id})
    return record


def _limits(rt: Runtime) -> EngineLimits:
    return EngineLimits(
        timeout_s=min(rt.settings.model_timeout_s, 3600.0),
        memory_limit=rt.settings.query_memory_limit,
        threads=rt.settings.query_threads,
    )


def _release_apply(
    rt: Runtime,
    scope_id: str,
    key: str,
    epsilon: Decimal,
    stored: dict[str, Any],
    answer_keys: tuple[str, ...],
) -> Apply:
    def apply(tx: LogTransaction) -> Answer:
        release = BudgetLedger.charge(
            tx.conn,
            scope_id=scope_id,
            query_key=key,
            epsilon=epsilon,
            delta=Decimal(0),
            answer=stored,
            request_id=None,
            audit_index=tx.index,
            now=rt.clock(),
        )
        body = {k: release.answer[k] for k in answer_keys}
        body["epsilon_spent"] = float(release.charged)
        body["budget"] = release.budget.to_dict()
        body["release"] = key
        fields = {"release": key, "product_version": release.answer["product_version"]}
        if release.reused:
            return Answer(body, fields={**fields, "reused": True})
        return Answer(body, epsilon=release.charged, fields=fields)

    return apply


# --- synthetic data ------------------------------------------------------------------


def synthetic_preview(
    rt: Runtime, caller: Principal, product_id: str, req: SyntheticRequest
) -> Pending:
    """``synthetic.preview``: ``{"epsilon", "accuracy"}``; nothing is run or spent."""
    scope = owned_scope(rt, caller, req.scope)
    pending = under_scope("synthetic.preview", scope)

    def build() -> Pending:
        record = _granted(rt, scope, product_id, "synthetic")
        encodings = synthetic_plan(record.manifest, scope, req)
        k = record.manifest.max_rows_per_unit
        body = {
            "epsilon": float(req.epsilon),
            "method": req.method,
            "encodings": [e.describe() for e in encodings],
            "accuracy": synth.accuracy(encodings, k, float(req.epsilon)),
        }
        return dataclasses.replace(pending, answer=Answer(body))

    return pending.attempt(build)


SYNTHETIC_ANSWER = ("columns", "rows", "method", "accuracy")


def synthetic(
    rt: Runtime,
    caller: Principal,
    product_id: str,
    req: SyntheticRequest,
    *,
    stored_only: bool = False,
) -> Pending:
    """``synthetic``: DP synthetic rows ``{"columns", "rows", "epsilon_spent", "budget",
    "release", "accuracy"}`` (the edge adds the receipt). Raises ``NotFound`` for a
    scope that is not the caller's; every other refusal is the returned call's.

    ``stored_only``: answer only from the stored release of this request, refusing
    ``conflict`` when there is none (the data changed or the release expired) instead of
    fitting and charging again (the console's download of rows it has shown)."""
    scope = owned_scope(rt, caller, req.scope)
    pending = dataclasses.replace(under_scope("synthetic", scope), receipt=True)

    def build() -> Pending:
        record = _granted(rt, scope, product_id, "synthetic")
        assert record.current is not None
        encodings = synthetic_plan(record.manifest, scope, req)
        version = record.current.version
        key = req.key(product_id, version)
        stored = rt.ledger.reused(scope.id, key)
        if stored is None and stored_only:
            raise Conflict(
                "no stored release answers this request any more (the data changed or "
                "the release expired); generate the rows again",
                {"release": key},
            )
        if stored is None:
            scope.check_affordable(req.epsilon)
            k = record.manifest.max_rows_per_unit
            seed = secrets.randbits(32)
            plan = SynthesisPlan(
                tuple(e.size for e in encodings),
                tuple(e.missing for e in encodings),
                k,
                float(req.epsilon),
                req.rows,
                req.method,
                seed,
                str(rt.settings.jax_cache_dir),
            )
            out = rt.query_runner().run_and_finish(
                rt.catalogue.data_path(record),
                counts_sql(record.manifest, encodings),
                _limits(rt),
                functools.partial(synthesize, plan),
            )
            accuracy = synth.accuracy(encodings, k, float(req.epsilon))
            if out.scale is not None:
                accuracy[0]["noise_scale"] = out.scale
            stored = {
                "columns": list(req.columns),
                "rows": synth.decode(encodings, out.codes, seed),
                "method": req.method,
                "accuracy": accuracy,
                "product_version": version,
                "epsilon": decimal_str(req.epsilon),
            }
        fields = {**pending.fields, "product_version": version, "release": key}
        apply = _release_apply(rt, scope.id, key, req.epsilon, stored, SYNTHETIC_ANSWER)
        return dataclasses.replace(pending, fields=fields, apply=apply)

    return pending.attempt(build)


# --- training ------------------------------------------------------------------------


def _train_fields(req: TrainRequest) -> dict[str, Any]:
    kind = req.spec.get("kind")
    spec_hash = hashlib.sha256(repr(sorted(req.spec.items())).encode()).hexdigest()
    return {"model_kind": kind if isinstance(kind, str) else None, "spec_hash": spec_hash}


def train_preview(rt: Runtime, caller: Principal, req: TrainRequest) -> Pending:
    """``model.train.preview``: ``{"epsilon", "accuracy"}``; nothing is run or spent."""
    scope = owned_scope(rt, caller, req.scope)
    pending = under_scope("model.train.preview", scope, **_train_fields(req))

    def build() -> Pending:
        record = _granted(rt, scope, req.product, "train")
        plan, _ = training_plan(record.manifest, scope, req)
        body = {
            "epsilon": float(req.epsilon),
            "kind": req.spec["kind"],
            "accuracy": plan.accuracy(),
        }
        return dataclasses.replace(pending, answer=Answer(body))

    return pending.attempt(build)


TRAIN_ANSWER = ("model", "metrics", "accuracy")


def train(rt: Runtime, caller: Principal, req: TrainRequest) -> Pending:
    """``model.train``: ``{"model", "metrics", "accuracy", "epsilon_spent", "budget",
    "release"}``; ``model`` is the exact JSON a model product can publish."""
    scope = owned_scope(rt, caller, req.scope)
    pending = dataclasses.replace(
        under_scope("model.train", scope, **_train_fields(req)), receipt=True
    )

    def build() -> Pending:
        record = _granted(rt, scope, req.product, "train")
        assert record.current is not None
        plan, target = training_plan(record.manifest, scope, req)
        version = record.current.version
        key = req.key(version)
        stored = rt.ledger.reused(scope.id, key)
        if stored is None:
            scope.check_affordable(req.epsilon)
            stored = _fit(rt, record, plan, target)
            stored.update(
                {
                    "product": record.id,
                    "product_version": version,
                    "epsilon": decimal_str(req.epsilon),
                    "spec": req.spec,
                }
            )
        fields = {**pending.fields, "product_version": version, "release": key}
        apply = _release_apply(rt, scope.id, key, req.epsilon, stored, TRAIN_ANSWER)
        return dataclasses.replace(pending, fields=fields, apply=apply)

    return pending.attempt(build)


def _fit(
    rt: Runtime, record: ProductRecord, plan: LinearPlan | ScorecardPlan, target: Any
) -> dict[str, Any]:
    path = rt.catalogue.data_path(record)
    runner = rt.query_runner()
    if isinstance(plan, LinearPlan):
        rel = runner.run_and_finish(
            path,
            linear.stats_sql(record.manifest, plan),
            _limits(rt),
            functools.partial(linear.release, plan),
        )
        model, metrics = linear.fit(plan, rel)
        return {"model": model, "metrics": metrics, "accuracy": plan.accuracy()}
    card = runner.run_and_finish(
        path,
        counts_sql(record.manifest, plan.encodings, target),
        _limits(rt),
        functools.partial(scorecard.release, plan),
    )
    return {
        "model": scorecard.model_json(card, plan, target.describe()),
        "metrics": scorecard.metrics(card, plan),
        "accuracy": plan.accuracy(),
    }

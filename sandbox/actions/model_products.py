"""Model products (模型产品) and their filing (算法备案), DESIGN §11.3: one audited
action per call.

- ``define`` (operator): a new definition is a new ``draft`` version (id: SHA-256 of
  its canonical JSON); the same definition again changes nothing;
- ``file`` (regulator) moves a draft to ``filed``; ``withdraw`` (operator or
  regulator) moves a draft or filed version to ``withdrawn``. Each transition, with
  its note, is recorded in the version's history and in the audit log, in one
  transaction;
- ``score`` / ``score_batch`` (enterprise, scope operation ``score``): the newest
  filed version answers a band. The subject is parsed, normalised and looked up as a
  verification subject is (``sandbox/actions/verifications.py``: the same keyed
  lookups, answer indexes, consent rule, keyed hashes in the entry and enumeration
  probes); at commit the version's call count grows only if it is still filed, so a
  withdrawal in between refuses the call (``model_not_filed``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from audit.log import LogTransaction
from policies.errors import OperationNotAllowed
from policies.principals import Principal, Role
from policies.scopes import Scope
from policies.tables import released_answers
from products.catalogue import ProductRecord
from products.errors import Conflict, DomainError, InvalidRequest, NotFound
from sandbox.actions.call import Answer, Pending
from sandbox.actions.queries import owned_scope, under_scope
from sandbox.actions.verifications import answered
from sandbox.errors import ModelNotFiled
from sandbox.models.products import (
    ModelStore,
    Scorer,
    Status,
    VersionRecord,
    definition_from,
)
from sandbox.runtime import Runtime
from sandbox.verification.lookup import Outcome
from sandbox.verification.request import Item, parse_item, parse_items

ITEMS = frozenset({"subject", "params", "consent_ref"})


def _training(rt: Runtime, release: str, product: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model of a training release and what a regulator sees of it. Raises
    ``InvalidRequest`` naming ``from_release``."""
    with rt.engine.connect() as conn:
        rows = conn.execute(
            sa.select(released_answers.c.scope_id, released_answers.c.answer)
            .where(released_answers.c.query_key == release)
            .order_by(released_answers.c.scope_id)
            .limit(2)
        ).all()
    if len(rows) > 1:
        # A release id is the request's key; the same training request under two
        # scopes made two releases with one id, each with its own noise.
        raise InvalidRequest(
            "invalid model product",
            {
                "fields": {
                    "from_release": [
                        f"release {release!r} was made under several scopes; publish the "
                        "model itself (its JSON, from the training answer) instead"
                    ]
                }
            },
        )
    row = rows[0] if rows else None
    stored = json.loads(row.answer) if row is not None else None
    if row is None or stored is None or "model" not in stored or stored.get("product") != product:
        raise InvalidRequest(
            "invalid model product",
            {"fields": {"from_release": [f"no training release {release!r} on {product!r}"]}},
        )
    training = {
        "release": release,
        "scope": row.scope_id,
        "product_version": stored.get("product_version"),
        "epsilon": stored.get("epsilon"),
        "metrics": stored.get("metrics"),
        "spec": stored.get("spec"),
    }
    return stored["model"], training


def define(rt: Runtime, actor: str, data: Mapping[str, Any]) -> Pending:
    """``model_product.define``: answered ``{"id", "version", "status", "created"}``
    (201 for a new version, 200 for a definition already stored)."""
    mp_id = data.get("id")
    pending = Pending(
        "model_product.define",
        target={"model_product": mp_id} if isinstance(mp_id, str) else {},
        changes_state=True,
    )

    def build() -> Pending:
        try:
            record = rt.catalogue.get(data["product"])
        except NotFound:
            raise InvalidRequest(
                "invalid model product",
                {"fields": {"product": [f"no product {data['product']!r}"]}},
            ) from None
        training = None
        if "from_release" in data:
            model, training = _training(rt, data["from_release"], record.id)
        else:
            model = data["model"]
        definition = definition_from(data, record.manifest, model)
        target = {"model_product": definition.id, "product": definition.product}
        fields = {"model_version": definition.version}

        def apply(tx: LogTransaction) -> Answer:
            version, created = ModelStore.define(
                tx.conn, definition, training, actor, tx.index, rt.clock()
            )
            body = {
                "id": definition.id,
                "version": version,
                "status": Status.DRAFT.value if created else _status(tx, definition.id, version),
                "created": created,
                "score_range": list(definition.score_range),
            }
            return Answer(body, status=201 if created else 200)

        return dataclasses.replace(pending, target=target, fields=fields, apply=apply)

    return pending.attempt(build)


def _status(tx: LogTransaction, mp_id: str, version: str) -> str:
    return ModelStore.read(tx.conn, mp_id).version(version).status.value


#: Transitions: (target status, statuses it may start from, roles that may make it).
TRANSITIONS: dict[str, tuple[Status, tuple[Status, ...], frozenset[Role]]] = {
    "file": (Status.FILED, (Status.DRAFT,), frozenset({Role.REGULATOR})),
    "withdraw": (
        Status.WITHDRAWN,
        (Status.DRAFT, Status.FILED),
        frozenset({Role.REGULATOR, Role.OPERATOR}),
    ),
}


def transition(
    rt: Runtime, caller: Principal, mp_id: str, version: str, event: str, note: str | None
) -> Pending:
    """``model_product.file`` / ``model_product.withdraw``: answered with the version's
    ``{"id", "version", "status"}``. Refused with ``forbidden`` (role), ``not_found``,
    or ``conflict`` when the version's status does not allow it (e.g. filing a
    withdrawn version)."""
    to, allowed_from, roles = TRANSITIONS[event]
    pending = Pending(
        f"model_product.{event}",
        target={"model_product": mp_id},
        fields={"model_version": version, **({"note": note} if note else {})},
        changes_state=True,
    )

    def build() -> Pending:
        if caller.role not in roles:
            raise OperationNotAllowed(
                f"a {caller.role.value} may not {event} a model version",
                {"role": caller.role.value},
            )
        record = rt.models.get(mp_id)
        record.version(version)  # NotFound
        target = {"model_product": mp_id, "product": record.product}

        def apply(tx: LogTransaction) -> Answer:
            if not ModelStore.transition(
                tx.conn, mp_id, version, to, allowed_from, caller.id, note, tx.index, rt.clock()
            ):
                now = _status(tx, mp_id, version)
                raise Conflict(
                    f"version {version[:12]}… is {now}: it cannot be {to.value}",
                    {"model_product": mp_id, "version": version, "status": now},
                )
            return Answer({"id": mp_id, "version": version, "status": to.value})

        return dataclasses.replace(pending, target=target, apply=apply)

    return pending.attempt(build)


def _full(caller: Principal) -> bool:
    return caller.role in (Role.OPERATOR, Role.REGULATOR)


def read(rt: Runtime, caller: Principal, mp_id: str) -> Pending:
    """``model_product.read``: one model product (with every version, definition,
    training release, filing history and call counts for operators and regulators)."""
    pending = Pending("model_product.read", target={"model_product": mp_id})

    def build() -> Pending:
        record = rt.models.get(mp_id)
        body = record.to_dict(full=_full(caller))
        target = {"model_product": mp_id, "product": record.product}
        return dataclasses.replace(pending, target=target, answer=Answer(body))

    return pending.attempt(build)


def list_all(rt: Runtime, caller: Principal) -> Pending:
    """``model_product.list``."""
    body = {
        "model_products": [rt.models.get(i).to_dict(full=_full(caller)) for i in rt.models.ids()]
    }
    return Pending("model_product.list", answer=Answer(body))


# --- scoring -------------------------------------------------------------------------


def _scoring(
    rt: Runtime, caller: Principal, mp_id: str, data: Mapping[str, Any], action: str
) -> tuple[Pending, Scope] | Pending:
    target = {"model_product": mp_id}
    try:
        scope = owned_scope(rt, caller, data["scope"], cached=True)
    except DomainError as exc:
        return Pending(action, target=target, refusal=exc)
    pending = under_scope(action, scope)
    return (
        dataclasses.replace(
            pending,
            target={**target, **pending.target},
            receipt=True,
            request_id=data.get("request_id"),
        ),
        scope,
    )


def _current(rt: Runtime, scope: Scope, mp_id: str) -> tuple[VersionRecord, Scorer, ProductRecord]:
    """The version that scores now, its scorer and data product. Raises
    ``OperationNotAllowed``, ``ModelNotFiled``, ``NotFound``, status refusals."""
    scope.check_usable(rt.clock())
    record, product = rt.models.scoring(mp_id, rt.catalogue.get)
    if scope.product != record.product or mp_id not in scope.score:
        granted = ", ".join(sorted(scope.score)) or "none"
        raise OperationNotAllowed(
            f"scope {scope.id!r} does not grant scoring with {mp_id!r} (it grants: {granted})",
            {"scope": scope.id, "model_product": mp_id},
        )
    version = record.current
    if version is None:
        raise ModelNotFiled(
            f"model product {mp_id!r} has no filed version: it scores nobody until the "
            "supervising bureau files one (算法备案)",
            {"model_product": mp_id},
        )
    return version, rt.models.scorer(record, version, product.manifest), product


def _bands(
    rt: Runtime, scorer: Scorer, record: ProductRecord, items: Sequence[Item]
) -> tuple[list[str], list[Outcome]]:
    """Each item's band, and verification outcomes for the entry and the probes."""
    path = rt.catalogue.data_path(record)
    if scorer.kind == "scorecard":
        outcomes = rt.verifier.run(scorer.vp, record.manifest, path, items)
        return [scorer.band_of_outcome(o) for o in outcomes], outcomes
    values = rt.verifier.values(scorer.vp, record.manifest, path, items, scorer.columns)
    bands = [scorer.band_of_values(v) for v in values]
    # Only whether each subject was found goes on (to the enumeration probes).
    return bands, [Outcome({}, v is not None) for v in values]


def _counted(pending: Pending, mp_id: str, version: str, n: int) -> Pending:
    answer = pending.answer
    assert answer is not None

    def apply(tx: LogTransaction) -> Answer:
        if not ModelStore.count(tx.conn, mp_id, version, n):
            raise ModelNotFiled(
                f"version {version[:12]}… of {mp_id!r} was withdrawn; no filed version "
                "scored this call",
                {"model_product": mp_id},
            )
        return answer

    return dataclasses.replace(
        pending, answer=None, apply=apply, fields={**pending.fields, "model_version": version}
    )


def score(rt: Runtime, caller: Principal, mp_id: str, data: Mapping[str, Any]) -> Pending:
    """``model.score``: ``{"band", "model_version"}`` (the edge adds the receipt)."""
    started = _scoring(rt, caller, mp_id, data, "model.score")
    if isinstance(started, Pending):
        return started
    pending, scope = started

    def build() -> Pending:
        version, scorer, record = _current(rt, scope, mp_id)
        item = parse_item(scorer.vp, record.manifest, {k: v for k, v in data.items() if k in ITEMS})
        bands, outcomes = _bands(rt, scorer, record, [item])
        body = {"band": bands[0], "model_version": version.version}
        done = answered(rt, pending, scorer.vp, [item], outcomes, body)
        return _counted(done, mp_id, version.version, 1)

    return pending.attempt(build)


def score_batch(rt: Runtime, caller: Principal, mp_id: str, data: Mapping[str, Any]) -> Pending:
    """``model.score.batch``: ``{"results": [{"band"}...], "model_version"}`` in item
    order; each item counts as a call."""
    started = _scoring(rt, caller, mp_id, data, "model.score.batch")
    if isinstance(started, Pending):
        return started
    pending, scope = started
    raw = data.get("items")
    pending = dataclasses.replace(pending, calls=len(raw) if isinstance(raw, list) and raw else 1)

    def build() -> Pending:
        version, scorer, record = _current(rt, scope, mp_id)
        items = parse_items(
            scorer.vp, record.manifest, raw, max_items=rt.verifier.limits.max_batch_items
        )
        bands, outcomes = _bands(rt, scorer, record, items)
        body = {"results": [{"band": b} for b in bands], "model_version": version.version}
        done = answered(rt, pending, scorer.vp, items, outcomes, body)
        return _counted(done, mp_id, version.version, len(items))

    return pending.attempt(build)

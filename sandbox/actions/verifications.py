"""Verification products and calls (DESIGN §5, §9): yes/no answers, never values.

A call is counted against the scope (each batch item counts), checked against the
scope's ``verify`` list, parsed and normalised at the edge, answered by keyed
lookups in the isolated DuckDB sandbox, and recorded for enumeration detection.
The audit entry carries keyed hashes of the subjects (never the keys in clear) and
the consent references; whether a subject exists is never recorded where the
caller can read it (enumeration is reviewed on a fixed schedule,
``sandbox/verification/review.py``), so its own audit trail does not leak what the
answer hides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from audit.log import LogTransaction
from policies.errors import OperationNotAllowed
from policies.principals import Principal
from policies.scopes import Scope
from products.catalogue import Catalogue, ProductRecord
from products.errors import Conflict, DomainError, InvalidRequest, NotFound
from products.verification import VerificationProduct, verification_from
from sandbox.actions.call import Answer, Pending
from sandbox.actions.queries import owned_scope, under_scope
from sandbox.runtime import Runtime
from sandbox.verification.enumeration import key_hash
from sandbox.verification.lookup import Outcome
from sandbox.verification.probes import Probe
from sandbox.verification.request import Item, parse_item, parse_items

ITEMS = frozenset({"subject", "params", "consent_ref"})


def _definition(rt: Runtime, data: Mapping[str, Any]) -> VerificationProduct:
    """Check a definition (loaded by ``VerificationSchema``) against its data product.
    Raises ``InvalidRequest``."""
    product_id = data["product"]
    try:
        record = rt.catalogue.get(product_id)
    except NotFound:
        raise InvalidRequest(
            "invalid verification product", {"fields": {"product": [f"no product {product_id!r}"]}}
        ) from None
    return verification_from(data, record.manifest)


def define(rt: Runtime, defined_by: str, data: Mapping[str, Any]) -> Pending:
    """``verification_product.register``: check a definition (loaded by
    ``VerificationSchema``) against its data product and store it. Refused with
    ``invalid_request`` or ``conflict`` (the id is taken, also by a concurrent call)."""
    product_id = data.get("product")
    pending = Pending(
        "verification_product.register",
        target={"product": product_id} if isinstance(product_id, str) else {},
        changes_state=True,
    )

    def build() -> Pending:
        vp = _definition(rt, data)
        target = {"product": vp.product, "verification_product": vp.id}

        def apply(tx: LogTransaction) -> Answer:
            if not Catalogue.register_verification(tx.conn, vp, defined_by, rt.clock()):
                raise Conflict(
                    f"verification product {vp.id!r} already exists",
                    {"verification_product": vp.id},
                )
            return Answer(vp.to_dict(), status=201)

        return dataclasses.replace(pending, target=target, apply=apply)

    return pending.attempt(build)


def _scope_for(rt: Runtime, caller: Principal, data: Mapping[str, Any]) -> Scope:
    # Granted terms never change; the status read here may be a second old, and is
    # confirmed when the call commits, as are the rate and quota.
    return owned_scope(rt, caller, data["scope"], cached=True)


def _granted(rt: Runtime, scope: Scope, vp: VerificationProduct) -> None:
    scope.check_usable(rt.clock())
    if scope.product != vp.product or vp.id not in scope.verify:
        granted = ", ".join(sorted(scope.verify)) or "none"
        raise OperationNotAllowed(
            f"scope {scope.id!r} does not grant verification with {vp.id!r} (it grants: {granted})",
            {"scope": scope.id, "verification_product": vp.id},
        )


def answered(
    rt: Runtime,
    pending: Pending,
    vp: VerificationProduct,
    items: Sequence[Item],
    outcomes: Sequence[Outcome],
    body: dict[str, Any],
) -> Pending:
    """``pending`` answered with ``body``: its entry carries keyed hashes of the subjects
    (never the keys in clear) and the consent references; whether a subject exists is
    recorded only as an enumeration probe, which no caller can read."""
    hashes = [key_hash(rt.subject_secret, vp.product, vp.key, item.key) for item in items]
    fields = dict(pending.fields)
    if len(hashes) == 1:
        fields["subject_key_hash"] = hashes[0]
    else:
        fields["items"] = len(hashes)
        fields["subject_key_hashes"] = hashes
    consents = [item.consent_ref for item in items]
    if any(c is not None for c in consents):
        if len(items) == 1:
            fields["consent_ref"] = consents[0]
        else:
            fields["consent_refs"] = consents
    return dataclasses.replace(
        pending,
        fields=fields,
        probes=[Probe(h, o.found) for h, o in zip(hashes, outcomes, strict=True)],
        answer=Answer(body),
    )


def _verification_call(
    rt: Runtime, caller: Principal, vp_id: str, data: Mapping[str, Any], action: str
) -> tuple[Pending, Scope, VerificationProduct, ProductRecord] | Pending:
    """The call, counted under the caller's scope; ``data`` is the parsed body
    (``VerificationRequestSchema`` or ``BatchRequestSchema``)."""
    target = {"verification_product": vp_id}
    request_id = data.get("request_id")
    try:
        vp, record = rt.catalogue.verification_cached(vp_id)
        target["product"] = vp.product
        scope = _scope_for(rt, caller, data)
    except DomainError as exc:
        return Pending(action, target=target, refusal=exc)
    pending = under_scope(action, scope)
    pending = dataclasses.replace(
        pending,
        target={**target, **pending.target},
        receipt=True,
        request_id=request_id,
    )
    return pending, scope, vp, record


def verify(rt: Runtime, caller: Principal, vp_id: str, data: Mapping[str, Any]) -> Pending:
    """``verify``: one subject, answered ``{"match"}`` or ``{"match", "checks"}``."""
    started = _verification_call(rt, caller, vp_id, data, "verify")
    if isinstance(started, Pending):
        return started
    pending, scope, vp, record = started

    def build() -> Pending:
        _granted(rt, scope, vp)
        item = parse_item(vp, record.manifest, {k: v for k, v in data.items() if k in ITEMS})
        outcomes = _lookup(rt, vp, record, [item])
        return answered(rt, pending, vp, [item], outcomes, outcomes[0].answer)

    return pending.attempt(build)


def verify_batch(rt: Runtime, caller: Principal, vp_id: str, data: Mapping[str, Any]) -> Pending:
    """``verify.batch``: ``{"results": [answer, ...]}`` in item order; each item counts
    as a call."""
    started = _verification_call(rt, caller, vp_id, data, "verify.batch")
    if isinstance(started, Pending):
        return started
    pending, scope, vp, record = started
    raw = data.get("items")
    pending = dataclasses.replace(pending, calls=len(raw) if isinstance(raw, list) and raw else 1)

    def build() -> Pending:
        _granted(rt, scope, vp)
        items = parse_items(vp, record.manifest, raw, max_items=rt.verifier.limits.max_batch_items)
        outcomes = _lookup(rt, vp, record, items)
        return answered(rt, pending, vp, items, outcomes, {"results": [o.answer for o in outcomes]})

    return pending.attempt(build)


def _lookup(
    rt: Runtime, vp: VerificationProduct, record: ProductRecord, items: Sequence[Item]
) -> list[Outcome]:
    return rt.verifier.run(vp, record.manifest, rt.catalogue.data_path(record), items)


def read_definition(rt: Runtime, vp_id: str) -> Pending:
    """``verification_product.read``: one verification product's definition."""
    pending = Pending("verification_product.read", target={"verification_product": vp_id})

    def build() -> Pending:
        vp, _ = rt.catalogue.verification(vp_id)
        target = {"verification_product": vp.id, "product": vp.product}
        return dataclasses.replace(pending, target=target, answer=Answer(vp.to_dict()))

    return pending.attempt(build)


def list_definitions(rt: Runtime, product_id: str | None) -> Pending:
    """``verification_product.list``: the definitions (of one data product)."""
    ids = rt.catalogue.verification_ids(product_id)
    body = {"verification_products": [rt.catalogue.verification(i)[0].to_dict() for i in ids]}
    target = {"product": product_id} if product_id else {}
    return Pending("verification_product.list", target=target, answer=Answer(body))

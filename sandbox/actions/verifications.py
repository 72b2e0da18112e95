"""Verification products and calls (DESIGN §5, §9): yes/no answers, never values.

A call is counted against the scope (each batch item counts), checked against the
scope's ``verify`` list, parsed and normalised at the edge, answered by keyed
lookups in the isolated DuckDB sandbox, and recorded for enumeration detection.
The audit entry carries keyed hashes of the subjects (never the keys in clear) and
the consent references; whether a subject exists is never recorded where the
caller can read it (enumeration flags are separate platform entries), so its own
audit trail does not leak what the answer hides.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from audit.errors import AuditError
from audit.log import Effect
from policies.errors import OperationNotAllowed
from policies.principals import Principal
from policies.scopes import Scope, ScopeStatus, ScopeStore
from products.catalogue import Catalogue, ProductRecord
from products.errors import Conflict, InvalidRequest, NotFound
from products.verification import VerificationProduct, parse_verification_product
from sandbox.actions.admission import CallAdmission
from sandbox.actions.at_commit import AtCommit, Render
from sandbox.actions.note import AuditNote
from sandbox.runtime import Runtime
from sandbox.verification.enumeration import Verdict, key_hash
from sandbox.verification.lookup import Outcome
from sandbox.verification.probes import Probe
from sandbox.verification.request import Item, parse_item, parse_items

_log = logging.getLogger(__name__)
REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}\Z")


def _definition(rt: Runtime, data: Mapping[str, Any]) -> VerificationProduct:
    """Parse a verification product against its data product. Raises ``InvalidRequest``."""
    product_id = data.get("product")
    if not isinstance(product_id, str):
        raise InvalidRequest(
            "invalid verification product", {"fields": {"product": ["required: a data product id"]}}
        )
    try:
        record = rt.catalogue.get(product_id)
    except NotFound:
        raise InvalidRequest(
            "invalid verification product", {"fields": {"product": [f"no product {product_id!r}"]}}
        ) from None
    return parse_verification_product(dict(data), record.manifest)


def define(rt: Runtime, caller: Principal, data: Mapping[str, Any]) -> VerificationProduct:
    """Validate and store a verification product. Raises ``InvalidRequest``, ``Conflict``."""
    vp = _definition(rt, data)
    rt.catalogue.register_verification(vp, caller.id)
    return vp


class VerificationDefinition(AtCommit):
    """Stores a verification product when its audit entry commits, or refuses the call
    with ``conflict`` if the id was taken meanwhile."""

    def __init__(
        self, vp: VerificationProduct, created_by: str, now: datetime, render: Render
    ) -> None:
        super().__init__(render)
        self.vp = vp
        self.created_by = created_by
        self.now = now

    @classmethod
    def apply_all(cls, conn: Connection, effects: Sequence[Any]) -> None:
        for e in effects:
            if not Catalogue.register_verification_in(conn, e.vp, e.created_by, e.now):
                e.refusal = Conflict(
                    f"verification product {e.vp.id!r} already exists",
                    {"verification_product": e.vp.id},
                )


def define_with_entry(
    rt: Runtime, caller: Principal, data: Mapping[str, Any], note: AuditNote, render: Render
) -> VerificationProduct:
    """``define``, committed with the call's audit entry (``sandbox/actions/at_commit.py``).
    Raises ``InvalidRequest``, ``Conflict``."""
    vp = _definition(rt, data)
    if rt.catalogue.verification_product_owner(vp.id) is not None:
        raise Conflict(
            f"verification product {vp.id!r} already exists", {"verification_product": vp.id}
        )
    note.effect = VerificationDefinition(vp, caller.id, rt.clock(), render)
    note.after_append.append(lambda _index: rt.catalogue.forget())
    return vp


def _request_id(data: Mapping[str, Any]) -> str | None:
    rid = data.get("request_id")
    if rid is None:
        return None
    if not isinstance(rid, str) or not REQUEST_ID.match(rid):
        raise InvalidRequest(
            "request_id must be 1..128 printable ASCII characters",
            {"fields": {"request_id": ["1..128 printable ASCII characters"]}},
        )
    return rid


def _scope_for(
    rt: Runtime,
    caller: Principal,
    data: Mapping[str, Any],
    vp: VerificationProduct,
    note: AuditNote,
    calls: int,
) -> Scope:
    scope_id = data.get("scope")
    if not isinstance(scope_id, str) or not scope_id:
        raise InvalidRequest("scope is required", {"fields": {"scope": ["required"]}})
    admission = _admission(note)
    # Granted terms never change; the status read here may be a second old, and is
    # confirmed when the call commits (admission.py), as are the rate and quota.
    scope = rt.scopes.cached(scope_id)
    if scope.enterprise != caller.id:
        raise NotFound(f"no scope {scope_id!r}", {"scope": scope_id})
    note.target.update({"scope": scope.id, "product": scope.product})
    note.extra["policy_version"] = scope.terms_hash
    admission.count(scope, calls)
    scope.check_usable(rt.clock())
    if scope.product != vp.product or vp.id not in scope.verify:
        granted = ", ".join(sorted(scope.verify)) or "none"
        raise OperationNotAllowed(
            f"scope {scope.id!r} does not grant verification with {vp.id!r} (it grants: {granted})",
            {"scope": scope.id, "verification_product": vp.id},
        )
    return scope


def _lookup(
    rt: Runtime, vp: VerificationProduct, record: ProductRecord, items: Sequence[Item]
) -> list[Outcome]:
    return rt.verifier.run(vp, record.manifest, rt.catalogue.data_path(record), items)


def _record(
    rt: Runtime,
    scope: Scope,
    vp: VerificationProduct,
    items: Sequence[Item],
    outcomes: Sequence[Outcome],
    note: AuditNote,
) -> None:
    hashes = [key_hash(rt.subject_secret, vp.product, vp.key, item.key) for item in items]
    if len(hashes) == 1:
        note.extra["subject_key_hash"] = hashes[0]
    else:
        note.extra["items"] = len(hashes)
        note.extra["subject_key_hashes"] = hashes
    consents = [item.consent_ref for item in items if item.consent_ref is not None]
    if consents:
        note.extra["consent_ref" if len(items) == 1 else "consent_refs"] = (
            consents[0] if len(items) == 1 else [item.consent_ref for item in items]
        )
    admission = _admission(note)
    admission.record([Probe(h, o.found) for h, o in zip(hashes, outcomes, strict=True)])
    note.after_append.append(lambda _index: _act_on(rt, scope, admission.verdict))


def _admission(note: AuditNote) -> CallAdmission:
    if note.admission is None:  # pragma: no cover - the HTTP layer always attaches one
        raise RuntimeError("verification calls are admitted at commit (lifecycle.py)")
    return note.admission


# The reason a platform suspension gives the enterprise: no statistics in it.
SUSPENSION_REASON = (
    "suspended by the platform: possible enumeration of verification subjects; "
    "an operator must review and resume it"
)


class PlatformSuspension(Effect):
    """Suspends a scope in the transaction that appends its flag entry, so that the
    suspension and the entry recording it commit together or not at all."""

    def __init__(self, scope_id: str, now: datetime) -> None:
        self.scope_id = scope_id
        self.now = now
        self.suspended = False

    @classmethod
    def apply_all(cls, conn: Connection, effects: Sequence[Any]) -> None:
        for e in effects:
            e.suspended = ScopeStore.set_status_in(
                conn,
                e.scope_id,
                ScopeStatus.SUSPENDED,
                SUSPENSION_REASON,
                allowed_from=(ScopeStatus.ACTIVE,),
                now=e.now,
            )

    def entry_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        if self.suspended:
            return fields
        # Suspended (or revoked) already, e.g. by a concurrent batch: a plain flag.
        return {**fields, "decision": "allow", "suspended": False}


def _act_on(rt: Runtime, scope: Scope, verdict: Verdict | None) -> None:
    """Flag (and past the threshold, suspend) a scope whose window looks like
    enumeration: after the call's entry committed, as the platform's own entries."""
    if verdict is None or not verdict.flag:
        return
    now = rt.clock()
    if not verdict.suspend and not rt.flags.due(scope.id, now):
        return  # flagged already in this bucket (sandbox/verification/flags.py)
    # The flag is the platform's own entry, not a field of the caller's: the caller can
    # read its own entries, and a flag that appears or not after a probe would tell it
    # whether the probed subject exists. Regulators (and filters on actor=platform) see
    # it; the enterprise sees only the suspension, once it happens.
    suspension = PlatformSuspension(scope.id, now) if verdict.suspend else None
    fields = {
        "actor": "platform",
        "role": "platform",
        "action": "scope.flag",
        "target": {"scope": scope.id, "product": scope.product},
        "request_hash": None,
        "decision": "deny" if suspension else "allow",
        "reason": verdict.reason,
        "epsilon": "0",
        "result_hash": None,
        "jti": None,
        "client": None,
        "suspended": suspension is not None,
    }
    try:
        rt.audit.append(fields, suspension)
    except AuditError:
        # The caller's own entry has committed and its answer stands; the window still
        # trips, so the next batch of this scope flags (and suspends) it again.
        _log.exception("could not record the flag of scope %s", scope.id)
        return
    if suspension is not None:
        rt.scopes.forget(scope.id)


def verify(
    rt: Runtime, caller: Principal, vp_id: str, data: Mapping[str, Any], note: AuditNote
) -> dict[str, Any]:
    """Answer one verification call: ``{"match"}`` or ``{"match", "checks"}``."""
    vp, record = rt.catalogue.verification_cached(vp_id)
    note.target.update({"verification_product": vp.id, "product": vp.product})
    unknown = sorted(set(data) - {"scope", "subject", "params", "consent_ref", "request_id"})
    if unknown:
        raise InvalidRequest(
            f"unknown field(s): {', '.join(unknown)}",
            {"fields": {"_schema": [f"unknown: {', '.join(unknown)}"]}},
        )
    note.request_id = _request_id(data)
    scope = _scope_for(rt, caller, data, vp, note, calls=1)
    item = parse_item(
        vp,
        record.manifest,
        {k: v for k, v in data.items() if k in ("subject", "params", "consent_ref")},
    )
    outcomes = _lookup(rt, vp, record, [item])
    _record(rt, scope, vp, [item], outcomes, note)
    return outcomes[0].answer


def verify_batch(
    rt: Runtime, caller: Principal, vp_id: str, data: Mapping[str, Any], note: AuditNote
) -> dict[str, Any]:
    """Answer a batch: ``{"results": [answer, ...]}`` in item order; each item counts."""
    vp, record = rt.catalogue.verification_cached(vp_id)
    note.target.update({"verification_product": vp.id, "product": vp.product})
    unknown = sorted(set(data) - {"scope", "items", "request_id"})
    if unknown:
        raise InvalidRequest(
            f"unknown field(s): {', '.join(unknown)}",
            {"fields": {"_schema": [f"unknown: {', '.join(unknown)}"]}},
        )
    note.request_id = _request_id(data)
    raw = data.get("items")
    calls = len(raw) if isinstance(raw, list) and raw else 1
    scope = _scope_for(rt, caller, data, vp, note, calls=calls)
    items = parse_items(vp, record.manifest, raw, max_items=rt.verifier.limits.max_batch_items)
    outcomes = _lookup(rt, vp, record, items)
    _record(rt, scope, vp, items, outcomes, note)
    return {"results": [o.answer for o in outcomes]}

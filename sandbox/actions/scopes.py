"""Operators' scope grants and transitions (suspend, resume, revoke), and reads.

A grant or a transition commits in the transaction of its audit entry
(``sandbox/actions/call.py``): a failed append leaves no scope granted or changed, and
a change another process made impossible meanwhile (the id taken, the scope revoked)
is refused there with ``conflict`` and recorded as refused.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from audit.log import LogTransaction
from policies.principals import Principal, Role
from policies.scopes import ScopeGrant, ScopeStatus, ScopeStore, check_grant
from products.errors import Conflict, NotFound
from products.manifest import DataProduct
from sandbox.actions.call import Answer, Pending
from sandbox.runtime import Runtime

# The statuses each transition may start from (DESIGN §4: suspension is reversible,
# revocation final).
ALLOWED_FROM: dict[ScopeStatus, tuple[ScopeStatus, ...]] = {
    ScopeStatus.SUSPENDED: (ScopeStatus.ACTIVE,),
    ScopeStatus.ACTIVE: (ScopeStatus.SUSPENDED,),
    ScopeStatus.REVOKED: (ScopeStatus.ACTIVE, ScopeStatus.SUSPENDED),
}
ACTION_OF: dict[ScopeStatus, str] = {
    ScopeStatus.SUSPENDED: "scope.suspend",
    ScopeStatus.ACTIVE: "scope.resume",
    ScopeStatus.REVOKED: "scope.revoke",
}


def grant(rt: Runtime, request: ScopeGrant, granted_by: str) -> Pending:
    """``scope.grant``: check the parsed grant against the catalogue and store it;
    answered with the scope (201). Refused with ``invalid_request`` naming the fields,
    or ``conflict`` if the id is taken."""
    pending = Pending(
        "scope.grant",
        target={"scope": request.id, "product": request.product, "enterprise": request.enterprise},
        # The purpose, so that the annual disclosure report (sandbox/disclosure.py) can
        # count scopes by purpose from the audit log alone (DESIGN §12).
        fields={"purpose": request.purpose},
        changes_state=True,
    )

    def build() -> Pending:
        g = check_grant(
            request,
            product_of=lambda pid: _manifest(rt, pid),
            enterprise_exists=lambda pid: _is_enterprise(rt, pid),
            verification_product_of=rt.catalogue.verification_product_owner,
            model_product_of=rt.models.owner,
        )

        def apply(tx: LogTransaction) -> Answer:
            scope = ScopeStore.grant(tx.conn, g, granted_by, rt.clock())
            if scope is None:
                raise Conflict(f"scope {g.id!r} already exists", {"scope": g.id})
            return Answer(scope.to_dict(), status=201)

        return dataclasses.replace(pending, apply=apply)

    return pending.attempt(build)


def _manifest(rt: Runtime, product_id: str) -> DataProduct | None:
    try:
        return rt.catalogue.get(product_id).manifest
    except NotFound:
        return None


def _is_enterprise(rt: Runtime, principal_id: str) -> bool:
    p = rt.principals.find(principal_id)
    return p is not None and p.role is Role.ENTERPRISE


def transition(rt: Runtime, scope_id: str, status: ScopeStatus, reason: str | None) -> Pending:
    """``scope.suspend`` / ``scope.resume`` / ``scope.revoke``: move the scope to
    ``status``; answered with the scope. Refused with ``not_found``, or ``conflict`` if
    its status does not allow the move (e.g. resuming a revoked scope)."""
    pending = Pending(ACTION_OF[status], target={"scope": scope_id}, changes_state=True)

    def build() -> Pending:
        current = rt.scopes.get(scope_id)

        def apply(tx: LogTransaction) -> Answer:
            moved = ScopeStore.set_status(
                tx.conn,
                scope_id,
                status,
                reason,
                allowed_from=ALLOWED_FROM[status],
                now=rt.clock(),
            )
            if moved is None:
                now_status, _ = ScopeStore.status(tx.conn, scope_id)
                raise Conflict(
                    f"scope {scope_id!r} is {now_status.value}; cannot become {status.value}",
                    {"scope": scope_id, "status": now_status.value},
                )
            return Answer(moved.to_dict())

        target = {"scope": scope_id, "product": current.product, "enterprise": current.enterprise}
        return dataclasses.replace(pending, target=target, apply=apply)

    return pending.attempt(build)


def read(rt: Runtime, caller: Principal, scope_id: str) -> Pending:
    """``scope.read``: the scope with its budget; enterprises see only their own
    (another's is ``not_found``, so ids do not leak)."""
    pending = Pending("scope.read", target={"scope": scope_id})

    def build() -> Pending:
        scope = rt.scopes.get(scope_id)
        if caller.role is Role.ENTERPRISE and scope.enterprise != caller.id:
            raise NotFound(f"no scope {scope_id!r}", {"scope": scope_id})
        target = {"scope": scope.id, "product": scope.product, "enterprise": scope.enterprise}
        return dataclasses.replace(pending, target=target, answer=Answer(scope.to_dict()))

    return pending.attempt(build)


def listing(rt: Runtime, caller: Principal) -> Pending:
    """``scope.list``: every scope (enterprises: their own)."""
    only = caller.id if caller.role is Role.ENTERPRISE else None
    body = {"scopes": [s.to_dict() for s in rt.scopes.list(enterprise=only)]}
    return Pending("scope.list", answer=Answer(body))


def charges(rt: Runtime, scope_id: str) -> Pending:
    """``scope.charges``: the scope's budget ledger, every charge with its audit index."""
    pending = Pending("scope.charges", target={"scope": scope_id})

    def build() -> Pending:
        scope = rt.scopes.get(scope_id)
        body: dict[str, Any] = {
            "scope": scope.id,
            "budget": scope.budget.to_dict(),
            "charges": rt.ledger.charges(scope_id),
        }
        target = {"scope": scope.id, "product": scope.product}
        return dataclasses.replace(pending, target=target, answer=Answer(body))

    return pending.attempt(build)

"""Principals and their keys: registered and changed with their audit entry, and read.

Who exists and which keys may sign for them is what every other decision rests on, so
a registration, a new key or a disabled key commits in the transaction of its audit
entry, or not at all. A change another process made impossible meanwhile (the id or
kid taken, the key gone) is refused there and recorded as refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from audit.log import LogTransaction
from policies.principals import (
    KeyAlg,
    Principal,
    PrincipalRequest,
    PrincipalStore,
    PublicKey,
    Role,
)
from products.errors import Conflict, Forbidden, InvalidRequest, NotFound
from sandbox.actions.call import Answer, Pending
from sandbox.runtime import Runtime


def register(
    rt: Runtime,
    request: PrincipalRequest,
    created_by: str | None,
    *,
    roles: Sequence[Role] = (Role.ENTERPRISE, Role.REGULATOR),
) -> Pending:
    """``principal.register``: a principal with its keys (201). ``roles`` are the roles
    this edge may register (operators only locally). Refused with ``invalid_request``,
    or ``conflict`` (the id is taken)."""
    pending = Pending("principal.register", target={"principal": request.id}, changes_state=True)
    if request.role not in roles:
        allowed = " or ".join(repr(r.value) for r in roles)
        local = "" if Role.OPERATOR in roles else " (operators: 'sandbox principals add')"
        return pending.refused(
            InvalidRequest("invalid principal", {"fields": {"role": [f"must be {allowed}{local}"]}})
        )
    refusal = _suite_refusal(rt, request.keys)
    if refusal is not None:
        return pending.refused(refusal)
    principal = Principal(
        id=request.id,
        role=request.role,
        name=request.name,
        keys=tuple(
            sorted((dataclasses.replace(k, status="active") for k in request.keys), key=_kid)
        ),
        created_at=rt.clock(),
    )

    def apply(tx: LogTransaction) -> Answer:
        if PrincipalStore.add(tx.conn, principal, created_by) is None:
            raise Conflict(
                f"principal {principal.id!r} already exists", {"principal": principal.id}
            )
        return Answer(principal.to_dict(), status=201)

    return dataclasses.replace(pending, apply=apply)


def add_key(rt: Runtime, principal_id: str, key: PublicKey) -> Pending:
    """``principal.key_add``: add a public key (201). Refused with ``not_found`` or
    ``conflict`` (the kid is taken)."""
    pending = Pending("principal.key_add", target={"principal": principal_id}, changes_state=True)
    refusal = _suite_refusal(rt, [key])
    if refusal is not None:
        return pending.refused(refusal)

    def apply(tx: LogTransaction) -> Answer:
        if PrincipalStore.load(tx.conn, principal_id) is None:
            raise NotFound(f"no principal {principal_id!r}", {"principal": principal_id})
        if not PrincipalStore.add_key(tx.conn, principal_id, key, rt.clock()):
            raise Conflict(f"principal {principal_id!r} already has kid {key.kid!r}")
        return Answer(_stored(tx, principal_id), status=201)

    return dataclasses.replace(pending, apply=apply)


def disable_key(rt: Runtime, principal_id: str, kid: str) -> Pending:
    """``principal.key_disable``: disable a key; tokens signed with it are refused
    from then on. Refused with ``not_found``."""

    def apply(tx: LogTransaction) -> Answer:
        if not PrincipalStore.disable_key(tx.conn, principal_id, kid, rt.clock()):
            raise NotFound(f"principal {principal_id!r} has no key {kid!r}")
        return Answer(_stored(tx, principal_id))

    return Pending(
        "principal.key_disable",
        target={"principal": principal_id},
        apply=apply,
        changes_state=True,
    )


def read(rt: Runtime, caller: Principal, principal_id: str) -> Pending:
    """``principal.read``: a principal and its keys (operators, regulators, itself)."""
    pending = Pending("principal.read", target={"principal": principal_id})

    def build() -> Pending:
        if caller.role is Role.ENTERPRISE and caller.id != principal_id:
            raise Forbidden("enterprises may only read their own principal record")
        return dataclasses.replace(
            pending, answer=Answer(rt.principals.get(principal_id).to_dict())
        )

    return pending.attempt(build)


def _suite_refusal(rt: Runtime, keys: Sequence[PublicKey]) -> InvalidRequest | None:
    """DESIGN §13: an ``sm2-sm3`` deployment registers SM2 keys only (SM2 keys are
    accepted in either suite); the refusal, or None."""
    if rt.suite.key_type != "SM2":
        return None
    other = [k for k in keys if k.alg is not KeyAlg.SM2SM3]
    if not other:
        return None
    return InvalidRequest(
        f"this deployment runs the {rt.suite.name} suite: principals register SM2 keys "
        f"(SM2SM3) only, and key {other[0].kid!r} is {other[0].alg.value}",
        {"field": "public_key", "suite": rt.suite.name},
    )


def _stored(tx: LogTransaction, principal_id: str) -> dict[str, Any]:
    found = PrincipalStore.load(tx.conn, principal_id)
    assert found is not None
    return found.to_dict()


def _kid(key: PublicKey) -> str:
    return key.kid

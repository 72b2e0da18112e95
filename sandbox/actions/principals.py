"""Principals and their keys: registered and changed with their audit entry, and read.

Who exists and which keys may sign for them is what every other decision rests on, so
a registration, a new key or a disabled key commits in the transaction of its audit
entry, or not at all. A change another process made impossible meanwhile (the id or
kid taken, the key gone) is refused there and recorded as refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from audit.log import LogTransaction
from policies.principals import (
    Principal,
    PrincipalStore,
    PublicKey,
    Role,
    check_new_principal,
    parse_key,
)
from products.errors import Conflict, Forbidden, InvalidRequest, NotFound
from sandbox.actions.call import Answer, Pending
from sandbox.runtime import Runtime

PRINCIPAL_FIELDS = frozenset({"id", "role", "name", "keys"})


def register(
    rt: Runtime,
    data: Mapping[str, Any],
    created_by: str | None,
    *,
    roles: Sequence[Role] = (Role.ENTERPRISE, Role.REGULATOR),
) -> Pending:
    """``principal.register``: a principal ``{id, role, name, keys}`` with its keys
    (201). ``roles`` are the roles this edge may register (operators only locally).
    Refused with ``invalid_request`` naming the fields, or ``conflict`` (id taken)."""
    pid = data.get("id")
    pending = Pending(
        "principal.register",
        target={"principal": pid} if isinstance(pid, str) else {},
        changes_state=True,
    )

    def build() -> Pending:
        principal = _parse_principal(rt, data, roles)

        def apply(tx: LogTransaction) -> Answer:
            if PrincipalStore.add(tx.conn, principal, created_by) is None:
                raise Conflict(
                    f"principal {principal.id!r} already exists", {"principal": principal.id}
                )
            return Answer(principal.to_dict(), status=201)

        return dataclasses.replace(pending, apply=apply)

    return pending.attempt(build)


def _parse_principal(rt: Runtime, data: Mapping[str, Any], roles: Sequence[Role]) -> Principal:
    errors: dict[str, list[str]] = {}
    pid, role, name, keys = data.get("id"), data.get("role"), data.get("name"), data.get("keys")
    if role not in [r.value for r in roles]:
        allowed = " or ".join(repr(r.value) for r in roles)
        errors["role"] = [
            f"must be {allowed}"
            + (
                ""
                if Role.OPERATOR in roles
                else " (operators are added with 'sandbox principals add')"
            )
        ]
    if not isinstance(name, str) or not name.strip() or len(name) > 300:
        errors["name"] = ["required: the display name (≤ 300 characters)"]
    if not isinstance(pid, str):
        errors["id"] = ["required"]
    unknown = sorted(set(data) - PRINCIPAL_FIELDS)
    if unknown:
        errors["_schema"] = [f"unknown field(s): {', '.join(unknown)}"]
    if not isinstance(keys, list) or not keys or not all(isinstance(k, dict) for k in keys):
        errors["keys"] = ["required: a non-empty list of {public_key, kid?, alg?}"]
    if errors:
        raise InvalidRequest("invalid principal", {"fields": errors})
    assert isinstance(pid, str) and isinstance(name, str) and isinstance(keys, list)
    assert isinstance(role, str)
    parsed = [parse_key(k) for k in keys]
    check_new_principal(pid, parsed)
    return Principal(
        id=pid,
        role=Role(role),
        name=name.strip(),
        keys=tuple(sorted((dataclasses.replace(k, status="active") for k in parsed), key=_kid)),
        created_at=rt.clock(),
    )


def add_key(rt: Runtime, principal_id: str, data: Mapping[str, Any]) -> Pending:
    """``principal.key_add``: add a public key (201). Refused with ``not_found`` or
    ``conflict`` (the kid is taken)."""
    pending = Pending("principal.key_add", target={"principal": principal_id}, changes_state=True)

    def build() -> Pending:
        key = parse_key(dict(data))
        rt.principals.get(principal_id)

        def apply(tx: LogTransaction) -> Answer:
            if not PrincipalStore.add_key(tx.conn, principal_id, key, rt.clock()):
                raise Conflict(f"principal {principal_id!r} already has kid {key.kid!r}")
            return Answer(_stored(tx, principal_id), status=201)

        return dataclasses.replace(pending, apply=apply)

    return pending.attempt(build)


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


def _stored(tx: LogTransaction, principal_id: str) -> dict[str, Any]:
    found = PrincipalStore.load(tx.conn, principal_id)
    assert found is not None
    return found.to_dict()


def _kid(key: PublicKey) -> str:
    return key.kid

"""Principals and their keys, registered and changed with their audit entry.

Who exists and which keys may sign for them is what every other decision rests on, so
a registration, a new key or a disabled key is an ``AtCommit`` effect of the call's
entry: it commits in the transaction that records it, or not at all (the caller gets
a 503 and may retry). A change another process made impossible in the meantime (the
id or kid taken, the key gone) is refused there and recorded as refused. The answer
is the principal as it will be once the entry commits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from policies.principals import (
    Principal,
    PrincipalStore,
    PublicKey,
    Role,
    check_new_principal,
)
from products.errors import Conflict, NotFound
from sandbox.actions.at_commit import AtCommit, Render
from sandbox.actions.note import AuditNote
from sandbox.runtime import Runtime


class Registration(AtCommit):
    def __init__(self, principal: Principal, created_by: str, render: Render) -> None:
        super().__init__(render)
        self.principal = principal
        self.created_by = created_by

    @classmethod
    def apply_all(cls, conn: Connection, effects: Sequence[Any]) -> None:
        for e in effects:
            p: Principal = e.principal
            if not PrincipalStore.add_in(
                conn, p.id, p.role, p.name, p.keys, e.created_by, p.created_at
            ):
                e.refusal = Conflict(f"principal {p.id!r} already exists", {"principal": p.id})


class KeyAddition(AtCommit):
    def __init__(self, principal_id: str, key: PublicKey, now: datetime, render: Render):
        super().__init__(render)
        self.principal_id = principal_id
        self.key = key
        self.now = now

    @classmethod
    def apply_all(cls, conn: Connection, effects: Sequence[Any]) -> None:
        for e in effects:
            if not PrincipalStore.add_key_in(conn, e.principal_id, e.key, e.now):
                e.refusal = Conflict(f"principal {e.principal_id!r} already has kid {e.key.kid!r}")


class KeyDisabling(AtCommit):
    def __init__(self, principal_id: str, kid: str, now: datetime, render: Render):
        super().__init__(render)
        self.principal_id = principal_id
        self.kid = kid
        self.now = now

    @classmethod
    def apply_all(cls, conn: Connection, effects: Sequence[Any]) -> None:
        for e in effects:
            if not PrincipalStore.disable_key_in(conn, e.principal_id, e.kid, e.now):
                e.refusal = NotFound(f"principal {e.principal_id!r} has no key {e.kid!r}")


def register(
    rt: Runtime,
    principal_id: str,
    role: Role,
    name: str,
    keys: Sequence[PublicKey],
    created_by: str,
    note: AuditNote,
    render: Render,
) -> dict[str, Any]:
    """Register a principal with the call's audit entry; return it as it will be.
    Raises ``InvalidRequest`` or ``Conflict`` (the id is taken)."""
    check_new_principal(principal_id, keys)
    if rt.principals.find(principal_id) is not None:
        raise Conflict(f"principal {principal_id!r} already exists", {"principal": principal_id})
    principal = Principal(
        id=principal_id,
        role=role,
        name=name,
        keys=tuple(sorted((dataclasses.replace(k, status="active") for k in keys), key=_kid)),
        created_at=rt.clock(),
    )
    note.effect = Registration(principal, created_by, render)
    note.after_append.append(lambda _index: rt.principals.forget(principal_id))
    return principal.to_dict()


def add_key(
    rt: Runtime, principal_id: str, key: PublicKey, note: AuditNote, render: Render
) -> dict[str, Any]:
    """Add ``key`` with the call's audit entry; return the principal as it will be.
    Raises ``NotFound`` or ``Conflict`` (the kid is taken)."""
    current = rt.principals.get(principal_id)
    if current.key(key.kid) is not None:
        raise Conflict(f"principal {principal_id!r} already has kid {key.kid!r}")
    note.effect = KeyAddition(principal_id, key, rt.clock(), render)
    note.after_append.append(lambda _index: rt.principals.forget(principal_id))
    added = dataclasses.replace(key, status="active")
    return dataclasses.replace(current, keys=(*current.keys, added)).to_dict()


def disable_key(
    rt: Runtime, principal_id: str, kid: str, note: AuditNote, render: Render
) -> dict[str, Any]:
    """Disable ``kid`` with the call's audit entry; return the principal as it will be.
    Raises ``NotFound``."""
    current = rt.principals.get(principal_id)
    if current.key(kid) is None:
        raise NotFound(f"principal {principal_id!r} has no key {kid!r}")
    note.effect = KeyDisabling(principal_id, kid, rt.clock(), render)
    note.after_append.append(lambda _index: rt.principals.forget(principal_id))
    keys = tuple(
        dataclasses.replace(k, status="disabled") if k.kid == kid else k for k in current.keys
    )
    return dataclasses.replace(current, keys=keys).to_dict()


def _kid(key: PublicKey) -> str:
    return key.kid

"""Operators' scope grants and transitions (suspend, resume, revoke), committed with
their audit entry.

Each change is an ``AtCommit`` effect of the call's entry: it happens in the
transaction that records it, so a failed append leaves no scope granted or changed
without a trace (the caller gets a 503 and may retry), and a change that another
process made impossible in the meantime (the id taken, the scope revoked) is refused
there with ``conflict`` and recorded as refused. The answer is the scope as it will be
once the entry commits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from policies.scopes import Scope, ScopeGrant, ScopeStatus, ScopeStore
from products.errors import Conflict, NotFound
from sandbox.actions.at_commit import AtCommit, Render
from sandbox.actions.note import AuditNote
from sandbox.runtime import Runtime

# The statuses each transition may start from (DESIGN §4: suspension is reversible,
# revocation final).
ALLOWED_FROM: dict[ScopeStatus, tuple[ScopeStatus, ...]] = {
    ScopeStatus.SUSPENDED: (ScopeStatus.ACTIVE,),
    ScopeStatus.ACTIVE: (ScopeStatus.SUSPENDED,),
    ScopeStatus.REVOKED: (ScopeStatus.ACTIVE, ScopeStatus.SUSPENDED),
}


class ScopeTransition(AtCommit):
    """Moves one scope to ``status`` when its entry commits, or refuses the call."""

    def __init__(
        self, scope: Scope, status: ScopeStatus, reason: str | None, now: datetime, render: Render
    ) -> None:
        super().__init__(render)
        self.scope = scope
        self.status = status
        self.reason = reason
        self.now = now

    @classmethod
    def apply_all(cls, conn: Connection, effects: Sequence[Any]) -> None:
        for e in effects:
            moved = ScopeStore.set_status_in(
                conn,
                e.scope.id,
                e.status,
                e.reason,
                allowed_from=ALLOWED_FROM[e.status],
                now=e.now,
            )
            if not moved:
                e.refusal = Conflict(
                    f"scope {e.scope.id!r} changed status meanwhile; cannot become "
                    f"{e.status.value}",
                    {"scope": e.scope.id},
                )


def transition(
    rt: Runtime,
    scope_id: str,
    status: ScopeStatus,
    reason: str | None,
    note: AuditNote,
    render: Render,
) -> dict[str, Any]:
    """Move ``scope_id`` to ``status`` with the call's audit entry; return the scope as
    it will be. Raises ``NotFound``, or ``Conflict`` if the scope's current status does
    not allow the move (e.g. resuming a revoked scope)."""
    current = rt.scopes.get(scope_id)
    if current.status not in ALLOWED_FROM[status]:
        raise Conflict(
            f"scope {scope_id!r} is {current.status.value}; cannot become {status.value}",
            {"scope": scope_id, "status": current.status.value},
        )
    note.effect = ScopeTransition(current, status, reason, rt.clock(), render)
    note.after_append.append(lambda _index: rt.scopes.forget(scope_id))
    return dataclasses.replace(current, status=status, status_reason=reason).to_dict()


class ScopeGrantAtCommit(AtCommit):
    """Stores one grant when its entry commits, or refuses the call if the id is taken."""

    def __init__(self, grant: ScopeGrant, granted_by: str, now: datetime, render: Render):
        super().__init__(render)
        self.grant = grant
        self.granted_by = granted_by
        self.now = now

    @classmethod
    def apply_all(cls, conn: Connection, effects: Sequence[Any]) -> None:
        for e in effects:
            if ScopeStore.grant_in(conn, e.grant, e.granted_by, e.now) is None:
                e.refusal = Conflict(f"scope {e.grant.id!r} already exists", {"scope": e.grant.id})


def grant(
    rt: Runtime, grant: ScopeGrant, granted_by: str, note: AuditNote, render: Render
) -> dict[str, Any]:
    """Grant ``grant`` with the call's audit entry; return the scope as it will be.
    Raises ``Conflict`` if the id is already taken."""
    try:
        rt.scopes.get(grant.id)
    except NotFound:
        pass
    else:
        raise Conflict(f"scope {grant.id!r} already exists", {"scope": grant.id})
    now = rt.clock()
    note.effect = ScopeGrantAtCommit(grant, granted_by, now, render)
    return ScopeStore.granted(grant, granted_by, now).to_dict()

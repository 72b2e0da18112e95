"""The platform's scheduled enumeration review (DESIGN §9, invariant 8).

Whether a verification subject exists must not be observable, also not through the
audit trail: an entry appended during a caller's request when its probes crossed a
threshold would show as a jump in its next ``X-Audit-Index``, and an entry whose
content is predictable could be recognised by its leaf hash, which any signed caller
can obtain with an inclusion proof. So enumeration is assessed only here:

- exactly one ``scope.review`` entry per review period (``enumeration_review_s``),
  whatever the windows hold, written by whichever process reaches the period first
  (a row per period in ``enumeration_reviews`` keeps it to one);
- it lists the scopes flagged in that period, with reasons, and suspends those past
  the suspension threshold in its own transaction;
- it carries a random ``salt``, so that its leaf hash cannot be brute-forced from
  the few values its other fields can take.

A suspension itself remains visible to the suspended enterprise (its calls are
refused); that is the purpose of suspending, and it costs the prober its scope.
"""

from __future__ import annotations

import secrets
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from audit.log import LogTransaction
from policies.scopes import ScopeStatus, ScopeStore
from products.errors import Conflict
from sandbox.actions.call import Answer, Caller, Outcome, Pending, commit
from sandbox.runtime import Runtime
from sandbox.verification.enumeration import assess
from sandbox.verification.probes import scopes_to_review, window_stats
from sandbox.verification.tables import enumeration_reviews

# The reason a platform suspension gives the enterprise: no statistics in it.
SUSPENSION_REASON = (
    "suspended by the platform: possible enumeration of verification subjects; "
    "an operator must review and resume it"
)

_CLAIM = {
    name: insert(enumeration_reviews)
    .on_conflict_do_nothing(index_elements=["period"])
    .returning(enumeration_reviews.c.period)
    for name, insert in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert))
}


def period_of(rt: Runtime, now: datetime) -> int:
    """The review period containing ``now``."""
    return int(now.timestamp()) // rt.enumeration.review_s


def reviewed(rt: Runtime, period: int) -> bool:
    """Whether the period's review entry is written already."""
    with rt.engine.connect() as conn:
        row = conn.execute(
            sa.select(enumeration_reviews.c.period).where(enumeration_reviews.c.period == period)
        ).first()
    return row is not None


def review(rt: Runtime) -> Outcome | None:
    """Write the current period's review entry unless it is written already; return
    its outcome (None if there was nothing to do)."""
    now = rt.clock()
    period = period_of(rt, now)
    if reviewed(rt, period):
        return None
    policy = rt.enumeration

    def apply(tx: LogTransaction) -> Answer:
        claimed = tx.conn.execute(
            _CLAIM[tx.conn.dialect.name], {"period": period, "audit_index": tx.index}
        ).first()
        if claimed is None:  # another process wrote it meanwhile
            raise Conflict(f"review period {period} was written by another process")
        flags = []
        for scope_id in scopes_to_review(tx.conn, now, policy):
            verdict = assess(window_stats(tx.conn, scope_id, now, policy), policy)
            if not verdict.flag:
                continue
            suspended = verdict.suspend and (
                ScopeStore.set_status(
                    tx.conn,
                    scope_id,
                    ScopeStatus.SUSPENDED,
                    SUSPENSION_REASON,
                    allowed_from=(ScopeStatus.ACTIVE,),
                    now=now,
                )
                is not None
            )
            flags.append({"scope": scope_id, "reason": verdict.reason, "suspended": suspended})
        return Answer(None, fields={"period": period, "flags": flags})

    pending = Pending(
        "scope.review",
        fields={"salt": secrets.token_hex(16)},
        apply=apply,
        changes_state=True,
    )
    return commit(rt, Caller.platform(), pending)

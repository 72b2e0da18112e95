"""Verification calls are admitted in the transaction that records them.

A verification call changes no data: its answer is a function of the product version
and the subject alone. What it changes is bookkeeping — its nonce (the replay guard),
its scope's rate and quota counters, the enumeration probes — and whether it may be
answered depends on that bookkeeping and on the scope still being usable. So the
handler computes the answer first, and ``CallAdmission`` decides at commit, inside the
audit log's append transaction (``audit.log.Effect``):

1. claim the nonce — a replay (also two copies of one token in one batch) is refused;
2. count the call(s) under the scope — over the rate or the daily quota is refused;
3. confirm the scope's status as stored now (the handler read a cached copy);
4. record the probes of admitted calls and assess the scope's window.

A refused call's entry is rewritten into the refusal (``decision: deny``, its reason,
status and the hash of the error body the caller receives), and the answer is never
sent. Everything commits with the entries or not at all, in one transaction per batch
of concurrent calls instead of four per call, and a crash can no longer leave a
counted call without its entry. Across processes and nodes the append transaction is
serialised by the log's head lock, so the checks see every earlier call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from policies.errors import Replayed, TokenExpired
from policies.limits import RateLimiter
from policies.nonces import NonceStore
from policies.scopes import Scope, ScopeStatus, ScopeStore
from sandbox.actions.at_commit import AtCommit, Render, unusable
from sandbox.verification.enumeration import EnumerationPolicy, Verdict
from sandbox.verification.probes import Probe, record_and_assess_in


class CallAdmission(AtCommit):
    """The bookkeeping of one verification call, applied when its entry commits."""

    def __init__(
        self,
        *,
        issuer: str,
        jti: str,
        nonce_expires_at: datetime,
        limiter: RateLimiter,
        enumeration: EnumerationPolicy,
        clock: Callable[[], datetime],
        render: Render,
    ) -> None:
        super().__init__(render)
        self.issuer = issuer
        self.jti = jti
        self.nonce_expires_at = nonce_expires_at
        self.limiter = limiter
        self.enumeration = enumeration
        self.clock = clock
        self.scope: Scope | None = None
        self.calls = 0
        self.probes: list[Probe] = []
        # Outcome, set at commit (and ``refusal``, if refused):
        self.verdict: Verdict | None = None

    def count(self, scope: Scope, calls: int) -> None:
        """Count ``calls`` under ``scope`` when the entry commits (refused ones too)."""
        self.scope = scope
        self.calls = calls

    def record(self, probes: Sequence[Probe]) -> None:
        """Record ``probes`` for enumeration detection if the call is admitted."""
        self.probes = list(probes)

    @classmethod
    def apply_all(cls, conn: Connection, effects: Sequence[Any]) -> None:
        calls: list[CallAdmission] = list(effects)
        now = calls[0].clock()
        # A token whose replay window has ended by now is refused here, not claimed: its
        # nonce may already have been pruned, and claiming it afresh would let a replay
        # through (NonceStore.prune).
        live = []
        for call in calls:
            if call.nonce_expires_at <= now:
                call.refusal = TokenExpired("token has expired", "expired", issuer=call.issuer)
            else:
                live.append(call)
        fresh = NonceStore.claim_in(conn, [(c.issuer, c.jti, c.nonce_expires_at) for c in live])
        for call, ok in zip(live, fresh, strict=True):
            if not ok:
                call.refusal = Replayed(
                    "this call (jti) was already used", "replayed", issuer=call.issuer
                )
        by_scope: dict[str, list[CallAdmission]] = {}
        for call in calls:
            if call.refusal is None and call.scope is not None:
                by_scope.setdefault(call.scope.id, []).append(call)
        if not by_scope:
            return
        statuses = ScopeStore.status_in(conn, by_scope)
        for scope_id, group in by_scope.items():
            first = group[0]
            assert first.scope is not None
            limits = first.limiter.count_in(conn, first.scope, [c.calls for c in group])
            status, reason = statuses.get(scope_id, (ScopeStatus.REVOKED, None))
            for call, over in zip(group, limits, strict=True):
                assert call.scope is not None
                call.refusal = over or unusable(call.scope, status, reason, now)
            admitted = [c for c in group if c.refusal is None and c.probes]
            if admitted:
                probes = [p for c in admitted for p in c.probes]
                verdict = record_and_assess_in(conn, scope_id, now, probes, first.enumeration)
                admitted[-1].verdict = verdict  # acted on once per scope and batch

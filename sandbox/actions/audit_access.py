"""Reading the audit trail: entries, checkpoints, proofs, bundles, cosignatures.

These calls are audited like any other (``audit.read``, ``audit.proof``, ...). A
checkpoint a call needs (the latest, or the one closing an exported range) and a
witness's cosignature are signed or stored in the transaction of the call's own entry.
"""

from __future__ import annotations

import base64
import dataclasses
from datetime import datetime
from typing import Any

from audit.errors import AuditError, BadCheckpoint
from audit.log import LogTransaction
from audit.note import CosignatureVerifier, SM2CosignatureVerifier
from policies.principals import KeyAlg, Principal, Role
from products.errors import InvalidRequest
from sandbox.actions.call import Answer, Pending
from sandbox.errors import from_audit
from sandbox.runtime import Runtime

MAX_PAGE = 1000


def entries(
    rt: Runtime,
    caller: Principal,
    *,
    start_time: datetime | None,
    end_time: datetime | None,
    actor: str | None,
    action: str | None,
    decision: str | None,
    product: str | None,
    scope: str | None,
    cursor: int,
    limit: int,
) -> Pending:
    """``audit.read``: entries with filters and cursor paging. Regulators read every
    entry; others only their own (as actor, or as the principal an entry concerns)."""
    pending = Pending("audit.read")

    def build() -> Pending:
        page = rt.audit.entries(
            start_time=start_time,
            end_time=end_time,
            actor=actor,
            action=action,
            decision=decision,
            product=product,
            scope=scope,
            involves=None if caller.role is Role.REGULATOR else caller.id,
            cursor=cursor,
            limit=min(limit, MAX_PAGE),
        )
        body = {
            "entries": [
                {
                    "index": e.index,
                    "leaf_hash": e.leaf_hash.hex(),
                    "leaf": base64.b64encode(e.leaf).decode(),
                    "entry": e.entry,
                }
                for e in page.entries
            ],
            "next_cursor": page.next_cursor,
        }
        return dataclasses.replace(pending, answer=Answer(body))

    return _audited(pending, build)


def checkpoint(rt: Runtime) -> Pending:
    """``audit.checkpoint``: the latest signed checkpoint with its cosignatures, and the
    newest checkpoint a witness cosigned (``cosigned_note``, extension: any client can
    check its view against the regulator's). A checkpoint covering every earlier
    entry is signed with this call's entry if none is stored, so a caller always gets
    one that covers the calls it made before."""
    log = rt.audit

    def apply(tx: LogTransaction) -> Answer:
        cp = tx.checkpoint()
        body = cp.to_api()
        body["note"] = log.cosigned_note(tx.conn, cp)
        body["cosigned_note"] = log.latest_cosigned_note(tx.conn)
        return Answer(body)

    return Pending("audit.checkpoint", apply=_checked(apply))


def inclusion(rt: Runtime, index: int, tree_size: int | None) -> Pending:
    """``audit.proof``: the RFC 9162 inclusion proof of entry ``index``."""
    pending = Pending("audit.proof")
    return _audited(
        pending,
        lambda: dataclasses.replace(
            pending, answer=Answer(rt.audit.inclusion_proof(index, tree_size).to_api())
        ),
    )


def consistency(rt: Runtime, first: int, second: int | None) -> Pending:
    """``audit.proof``: the RFC 9162 consistency proof between two tree sizes."""
    pending = Pending("audit.proof")
    return _audited(
        pending,
        lambda: dataclasses.replace(
            pending, answer=Answer(rt.audit.consistency_proof(first, second).to_api())
        ),
    )


def export(rt: Runtime, start: int, end: int | None) -> tuple[Pending, int]:
    """``audit.export``: the bundle of entries ``[start, end)`` (default: every
    committed entry). The checkpoint of size ``end`` is signed with this call's entry
    if none is stored; the edge streams the bundle once the call is committed
    (``AuditLog.export``). Returns the call and ``end``."""
    if end is None:
        end = rt.audit.size()
    size = end

    def apply(tx: LogTransaction) -> Answer:
        if not 0 <= start <= size <= tx.index:
            raise InvalidRequest(
                f"export range [{start}, {size}) is not within [0, {tx.index}]",
                {"fields": {"end": [f"at most {tx.index}"]}},
            )
        tx.checkpoint(size)
        return Answer(None)

    return Pending("audit.export", fields={"range": f"{start}-{end}"}, apply=_checked(apply)), end


#: The regulator key types a cosignature may be made with (docs/audit.md).
_COSIGNING: dict[KeyAlg, type[CosignatureVerifier]] = {
    KeyAlg.EDDSA: CosignatureVerifier,
    KeyAlg.SM2SM3: SM2CosignatureVerifier,
}


def cosign(rt: Runtime, caller: Principal, note: str) -> Pending:
    """``audit.cosign``: store the caller's (a regulator's) cosignature of one of this
    log's checkpoints. 201 when this call stored it; 200 with the line that was kept
    when this witness had cosigned that checkpoint already."""

    def apply(tx: LogTransaction) -> Answer:
        last: BadCheckpoint | None = None
        for key in caller.keys:
            if not key.active or key.alg not in _COSIGNING:
                continue
            verifier = _COSIGNING[key.alg].from_key(caller.id, key.pem)
            try:
                stored = tx.add_cosignature(note, verifier)
            except BadCheckpoint as exc:
                last = exc
                continue
            body = {"witness": caller.id, "line": stored.line, "created": stored.created}
            return Answer(body, status=201 if stored.created else 200)
        raise InvalidRequest(
            last.message
            if last
            else f"{caller.id!r} has no active Ed25519 or SM2 key to cosign with",
            {"witness": caller.id},
        )

    return Pending("audit.cosign", apply=_checked(apply))


def _audited(pending: Pending, build: Any) -> Pending:
    try:
        result: Pending = pending.attempt(build)
    except AuditError as exc:
        return pending.refused(from_audit(exc))
    return result


def _checked(apply: Any) -> Any:
    def run(tx: LogTransaction) -> Answer:
        try:
            answer: Answer = apply(tx)
        except AuditError as exc:
            raise from_audit(exc) from None
        return answer

    return run

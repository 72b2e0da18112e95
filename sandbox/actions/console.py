"""The web console's own audited actions (DESIGN §12): sign-in, sign-out, and the reads
its pages show.

A console page that shows protected data is one audited read of its principal, like
the API read it mirrors (``audit.read`` for the audit trail, ``audit.proof`` for an
entry with its proof, ``audit.checkpoint`` for the integrity panel, ``scope.list``,
``scope.charges``, ``product.list``, ``principal.list``, ``receipt.read``,
``report.read``, ``model_product.read``): one entry per page request, whose
``result_hash`` covers the data the page was rendered from (the answer body here), and
which records the console session (``console_session``). Console writes (grant,
suspend, resume, revoke, query, preview, synthetic data, filing and withdrawing model
versions) are the API's own actions (``sandbox/actions/scopes.py``, ``queries.py``,
``models.py``, ``model_products.py``) committed as calls of the signed-in principal.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from audit.entry import parse_leaf
from audit.errors import AuditError
from audit.log import LogTransaction, StoredCheckpoint, StoredEntry
from audit.merkle import leaf_hash as merkle_leaf_hash
from audit.merkle import verify_consistency
from audit.note import CosignatureVerifier, NoteVerifier, open_checkpoint, parse_note
from policies.errors import Replayed
from policies.principals import KeyAlg, Principal, Role
from policies.scopes import ScopeStatus
from policies.sessions import Challenge, ConsoleSession, SessionStore, claim_challenge
from products.errors import Conflict, NotFound
from sandbox.actions.call import Answer, Pending
from sandbox.errors import from_audit
from sandbox.models.products import version_of
from sandbox.runtime import Runtime

PAGE = 50
TEXT_SCAN = 50_000  # entries one text search examines per page (bounded work)
TAIL_CHECK = 1000  # newest entries whose leaves the integrity panel rehashes


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


# ----------------------------------------------------------------- sign-in, sign-out


def sign_in(rt: Runtime, principal: Principal, challenge: Challenge, secret_token: str) -> Pending:
    """``console.sign_in``: open a session for ``principal``, whose signature over
    ``challenge`` the edge verified (DESIGN §6 checks). In the entry's transaction the
    challenge is claimed (a second use is refused ``replayed``) and the session
    recorded under the SHA-256 of ``secret_token`` (the cookie's secret)."""

    def apply(tx: LogTransaction) -> Answer:
        if not claim_challenge(tx.conn, challenge):
            raise Replayed("this sign-in challenge was used already", "replayed")
        session = SessionStore.open(
            tx.conn,
            secret_token,
            principal.id,
            rt.clock(),
            rt.settings.console_session_s,
            tx.index,
        )
        body = {
            "principal": principal.id,
            "role": principal.role.value,
            "session": session.public_id,
            "expires_at": _iso(session.expires_at),
        }
        return Answer(body, fields={"console_session": session.public_id})

    return Pending("console.sign_in", target={"principal": principal.id}, apply=apply)


def sign_out(rt: Runtime, session: ConsoleSession) -> Pending:
    """``console.sign_out``: end the session (``conflict`` if it had ended already)."""

    def apply(tx: LogTransaction) -> Answer:
        if not SessionStore.end(tx.conn, session.id, rt.clock()):
            raise Conflict("this session has ended already", {"session": session.public_id})
        return Answer({"session": session.public_id, "ended": True})

    return Pending("console.sign_out", target={"principal": session.principal}, apply=apply)


# ----------------------------------------------------------------- the audit trail


@dataclass(frozen=True)
class TrailFilters:
    """The audit trail's filters (each None: not filtered)."""

    start_time: datetime | None = None
    end_time: datetime | None = None
    actor: str | None = None
    role: str | None = None
    action: str | None = None
    decision: str | None = None
    product: str | None = None
    scope: str | None = None
    text: str | None = None  # in the reason of refusals

    def as_fields(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = _iso(value) if isinstance(value, datetime) else str(value)
        return out


def _entry_row(e: StoredEntry) -> dict[str, Any]:
    return {"index": e.index, "leaf_hash": e.leaf_hash.hex(), "entry": e.entry}


def _concerns(e: StoredEntry, principal: str | None) -> bool:
    """Whether entry ``e`` is one ``principal`` may read as its own (None: any) — the
    rule of ``AuditLog.entries(involves=...)``: its actor, or the principal its target
    names."""
    if principal is None:
        return True
    fields = e.entry
    raw = fields.get("target")
    target: dict[str, Any] = raw if isinstance(raw, dict) else {}
    subject = target.get("enterprise") or target.get("principal")
    return principal in (fields.get("actor"), subject)


def _own(caller: Principal) -> str | None:
    """Whose entries ``caller`` may read: None (all) for regulators, else its own."""
    return None if caller.role is Role.REGULATOR else caller.id


def trail(rt: Runtime, caller: Principal, filters: TrailFilters, cursor: int | None) -> Pending:
    """``audit.read``: one page of the audit trail, newest first, from ``cursor`` (an
    index; None: the newest). Regulators read every entry, others their own. A text
    search examines at most ``TEXT_SCAN`` entries per page and says where it stopped."""
    pending = Pending("audit.read", fields={"view": "trail", "filters": filters.as_fields()})

    def build() -> Pending:
        size = rt.audit.size()
        start = size - 1 if cursor is None else min(cursor, size - 1)
        if start < 0:
            body: dict[str, Any] = {"entries": [], "next_cursor": None, "size": size}
            return dataclasses.replace(pending, answer=Answer(body))
        page = rt.audit.entries(
            start_time=filters.start_time,
            end_time=filters.end_time,
            actor=filters.actor,
            role=filters.role,
            action=filters.action,
            decision=filters.decision,
            product=filters.product,
            scope=filters.scope,
            reason_contains=filters.text,
            involves=_own(caller),
            cursor=start,
            limit=PAGE,
            descending=True,
            scan=TEXT_SCAN if filters.text else None,
        )
        body = {
            "entries": [_entry_row(e) for e in page.entries],
            "next_cursor": page.next_cursor,
            "from": start,
            "size": size,
            "searched_to": page.next_cursor if filters.text else None,
        }
        return dataclasses.replace(pending, answer=Answer(body))

    return _audit_read(pending, build)


def _audit_read(pending: Pending, build: Any) -> Pending:
    try:
        result: Pending = pending.attempt(build)
    except AuditError as exc:
        return pending.refused(from_audit(exc))
    return result


def entry(rt: Runtime, caller: Principal, index: int) -> Pending:
    """``audit.proof``: entry ``index`` with its leaf, and a signed checkpoint that
    covers it (the latest, or one signed with this call's entry), for the browser to
    check the inclusion proof against (``inclusion``). Not one's own: ``not_found``."""
    pending = Pending("audit.proof", fields={"view": "entry", "entry_index": index})

    def build() -> Pending:
        found = rt.audit.entries(cursor=index, limit=1).entries
        if not found or found[0].index != index or not _concerns(found[0], _own(caller)):
            raise NotFound(f"no audit entry {index} of yours", {"index": index})
        stored = found[0]

        def apply(tx: LogTransaction) -> Answer:
            latest = rt.audit.latest_checkpoint()
            cp = latest if latest is not None and latest.size > index else tx.checkpoint()
            body = {
                "index": index,
                "leaf": base64.b64encode(stored.leaf).decode(),
                "leaf_hash": base64.b64encode(stored.leaf_hash).decode(),
                "entry": stored.entry,
                "checkpoint": cp.to_api(),
            }
            return Answer(body)

        return dataclasses.replace(pending, apply=_audit_checked(apply))

    return _audit_read(pending, build)


def _audit_checked(apply: Any) -> Any:
    def run(tx: LogTransaction) -> Answer:
        try:
            answer: Answer = apply(tx)
        except AuditError as exc:
            raise from_audit(exc) from None
        return answer

    return run


def inclusion(rt: Runtime, index: int, tree_size: int) -> dict[str, Any]:
    """The RFC 9162 inclusion proof of ``index`` in ``tree_size`` (API form)."""
    return rt.audit.inclusion_proof(index, tree_size).to_api()


# ----------------------------------------------------------------- integrity


def integrity(rt: Runtime) -> Pending:
    """``audit.checkpoint``: the latest checkpoint (signed with this call's entry when
    the log has grown past it) and each witness's latest cosignature; the checks are
    made once the entry is committed (:func:`integrity_checks`)."""

    def apply(tx: LogTransaction) -> Answer:
        cp = tx.checkpoint()
        witnesses = [
            {"witness": w.witness, "size": w.size, "timestamp": w.timestamp, "line": w.line}
            for w in rt.audit.witnesses()
        ]
        return Answer({"checkpoint": cp.to_api(), "witnesses": witnesses})

    return Pending("audit.checkpoint", fields={"view": "integrity"}, apply=_audit_checked(apply))


@dataclass(frozen=True)
class Check:
    name: str  # a stable key, translated by the page
    ok: bool
    detail: str


def _platform_verifiers(rt: Runtime) -> list[NoteVerifier]:
    return [NoteVerifier.from_jwk(k, rt.settings.audit_origin) for k in rt.keys.jwks()["keys"]]


def integrity_checks(rt: Runtime, checkpoint: dict[str, Any]) -> list[Check]:
    """Check the log against ``checkpoint`` (API form) without trusting the store:

    * the checkpoint's signature under the platform's published keys;
    * the root of that size recomputed from the store's subtree hashes equals the
      signed root (a rewritten node cache or entry hash shows here);
    * each witness's latest cosignature verifies under its registered key, and the
      log is consistent (RFC 9162 proof, checked here) from that checkpoint to this one;
    * the newest ``TAIL_CHECK`` entries: each leaf hashes to its stored leaf hash and
      names its predecessor's hash as ``prev`` (a rewritten entry shows here).

    A whole-log check is ``sandbox audit export`` then ``sandbox audit verify``.
    """
    checks: list[Check] = []
    note, size = checkpoint["note"], int(checkpoint["tree_size"])
    signed_root = base64.b64decode(checkpoint["root_hash"])
    try:
        open_checkpoint(note, _platform_verifiers(rt), rt.settings.audit_origin)
        checks.append(Check("signature", True, f"size {size}"))
    except AuditError as exc:
        checks.append(Check("signature", False, exc.message))
    try:
        root = rt.audit.root(size)
        ok = root == signed_root
        detail = base64.b64encode(root).decode()
        checks.append(Check("root", ok, detail))
    except AuditError as exc:
        checks.append(Check("root", False, exc.message))
    checks.extend(_witness_checks(rt, size, signed_root))
    checks.append(_tail_check(rt, size))
    return checks


def _witness_checks(rt: Runtime, size: int, signed_root: bytes) -> list[Check]:
    out: list[Check] = []
    regulators = {p.id: p for p in rt.principals.with_role(Role.REGULATOR)}
    for w in rt.audit.witnesses():
        principal = regulators.get(w.witness)
        keys = [k for k in principal.keys if k.alg is KeyAlg.EDDSA] if principal else []
        parsed = parse_note(w.note + w.line + "\n")
        verified = False
        for key in keys:
            verifier = CosignatureVerifier.from_key(w.witness, key.pem)
            for sig in parsed.signatures:
                if verifier.matches(sig):
                    try:
                        verifier.verify(parsed.text, sig)
                        verified = True
                    except AuditError:
                        pass
        out.append(Check("cosignature", verified, f"{w.witness} @ {w.size}"))
        if w.size > size:
            out.append(Check("consistency", False, f"{w.witness}: {w.size} > {size}"))
            continue
        try:
            first_root = base64.b64decode(parse_note(w.note).text.split("\n")[2])
            if w.size == size:
                verify_consistency(size, size, first_root, signed_root, [])
            else:
                proof = rt.audit.consistency_proof(w.size, size)
                verify_consistency(w.size, size, first_root, signed_root, proof.proof)
            out.append(Check("consistency", True, f"{w.witness}: {w.size} → {size}"))
        except AuditError as exc:
            out.append(Check("consistency", False, f"{w.witness}: {exc.message}"))
    return out


def _tail_check(rt: Runtime, size: int) -> Check:
    if size == 0:
        return Check("tail", True, "0")
    page = rt.audit.entries(cursor=size - 1, limit=TAIL_CHECK, descending=True)
    entries = list(reversed(page.entries))
    bad: list[int] = []
    for i, e in enumerate(entries):
        if merkle_leaf_hash(e.leaf) != e.leaf_hash:
            bad.append(e.index)
            continue
        try:
            prev = parse_leaf(e.leaf, strict=False).get("prev")
        except AuditError:
            bad.append(e.index)
            continue
        if i > 0 and prev is not None and prev != entries[i - 1].leaf_hash.hex():
            bad.append(e.index)
    first = entries[0].index if entries else size
    detail = f"{first}–{size - 1}" if not bad else ", ".join(str(b) for b in bad[:10])
    return Check("tail", not bad, detail)


# ----------------------------------------------------------------- budgets, oversight


def budgets(rt: Runtime, caller: Principal) -> Pending:
    """``scope.charges``: every scope (enterprises: their own) with its budget, and every
    charge in time order, for the budget-over-time chart."""
    own = caller.id if caller.role is Role.ENTERPRISE else None
    scopes = [s.to_dict() for s in rt.scopes.list(enterprise=own)]
    body = {"scopes": scopes, "history": rt.ledger.history(enterprise=own)}
    return Pending("scope.charges", fields={"view": "budgets"}, answer=Answer(body))


def oversight(rt: Runtime) -> Pending:
    """``audit.read``: the newest refusals, enumeration flags (``scope.review`` entries
    that flagged scopes) and suspensions, and the scopes suspended now."""
    pending = Pending("audit.read", fields={"view": "oversight"})

    def build() -> Pending:
        size = rt.audit.size()
        top = max(size - 1, 0)
        denials = rt.audit.entries(decision="deny", cursor=top, limit=PAGE, descending=True)
        reviews = rt.audit.entries(action="scope.review", cursor=top, limit=500, descending=True)
        flags = [_entry_row(e) for e in reviews.entries if e.entry.get("flags")][:PAGE]
        suspensions = rt.audit.entries(
            action="scope.suspend", cursor=top, limit=PAGE, descending=True
        )
        suspended = [s.to_dict() for s in rt.scopes.list() if s.status is ScopeStatus.SUSPENDED]
        body = {
            "denials": [_entry_row(e) for e in denials.entries] if size else [],
            "flags": flags if size else [],
            "suspensions": [_entry_row(e) for e in suspensions.entries] if size else [],
            "suspended": suspended,
        }
        return dataclasses.replace(pending, answer=Answer(body))

    return _audit_read(pending, build)


def usage(rt: Runtime, caller: Principal, since: datetime) -> Pending:
    """``audit.read``: calls per product, action and decision since ``since``
    (operators and regulators: all; enterprises: their own)."""
    pending = Pending("audit.read", fields={"view": "usage", "since": _iso(since)})

    def build() -> Pending:
        own = caller.id if caller.role is Role.ENTERPRISE else None
        rows = rt.audit.counts(start_time=since, involves=own)
        body = {
            "since": _iso(since),
            "rows": [{"product": p, "action": a, "decision": d, "count": n} for p, a, d, n in rows],
        }
        return dataclasses.replace(pending, answer=Answer(body))

    return _audit_read(pending, build)


# ----------------------------------------------------------------- operator views


def products(rt: Runtime) -> Pending:
    """``product.list``: every product with its versions, its verification products and
    its model products (each version's filing status and call count; operators and
    regulators: row counts included)."""
    models: dict[str, list[dict[str, Any]]] = {}
    for mp_id in rt.models.ids():
        record = rt.models.get(mp_id)
        summary = record.to_dict(full=False)
        summary["versions"] = [{**v.to_dict(full=False), "calls": v.calls} for v in record.versions]
        models.setdefault(record.product, []).append(summary)
    out = []
    for product in rt.catalogue.products():
        item = product.to_dict(include_counts=True)
        item["versions"] = rt.catalogue.versions(product.id)
        item["verification_products"] = rt.catalogue.verification_ids(product.id)
        item["model_products"] = models.get(product.id, [])
        out.append(item)
    return Pending("product.list", fields={"view": "products"}, answer=Answer({"products": out}))


def principals(rt: Runtime) -> Pending:
    """``principal.list``: every principal with its keys."""
    out = [p.to_dict() for role in Role for p in rt.principals.with_role(role)]
    return Pending("principal.list", answer=Answer({"principals": out}))


def scope_detail(rt: Runtime, caller: Principal, scope_id: str) -> Pending:
    """``scope.read``: one scope with its budget and its charges (enterprises: their
    own; another's is ``not_found``)."""
    pending = Pending("scope.read", target={"scope": scope_id})

    def build() -> Pending:
        scope = rt.scopes.get(scope_id)
        if caller.role is Role.ENTERPRISE and scope.enterprise != caller.id:
            raise NotFound(f"no scope {scope_id!r}", {"scope": scope_id})
        body = {"scope": scope.to_dict(), "charges": rt.ledger.charges(scope_id)}
        target = {"scope": scope.id, "product": scope.product, "enterprise": scope.enterprise}
        return dataclasses.replace(pending, target=target, answer=Answer(body))

    return pending.attempt(build)


def model_version(rt: Runtime, mp_id: str, version: str) -> Pending:
    """``model_product.read`` of one version, for review (operators and regulators):
    the model product with every version in full, ``version`` (its exact definition,
    training release, filing history and call count) and ``recomputed``, the SHA-256 of
    the RFC 8785 encoding of the stored definition, which equals the version id (DESIGN
    §11.3). Refused ``not_found`` for an unknown model product or version."""
    pending = Pending(
        "model_product.read", target={"model_product": mp_id}, fields={"model_version": version}
    )

    def build() -> Pending:
        record = rt.models.get(mp_id)
        chosen = record.version(version)
        body = record.to_dict(full=True)
        body["version"] = chosen.to_dict(full=True)
        body["recomputed"] = version_of(chosen.definition)
        target = {"model_product": mp_id, "product": record.product}
        return dataclasses.replace(pending, target=target, answer=Answer(body))

    return pending.attempt(build)


# ----------------------------------------------------------------- receipts


def receipt(rt: Runtime, caller: Principal, index: int) -> tuple[Pending, dict[str, Any] | None]:
    """``receipt.read``: the facts of one's own entry ``index`` for a receipt the edge
    signs (its leaf, request and result hashes: the same claims as the receipt the
    call got). Returns the call and the claims' inputs (None when refused)."""
    pending = Pending("receipt.read", fields={"entry_index": index})
    found = rt.audit.entries(cursor=index, limit=1).entries
    if not found or found[0].index != index or found[0].entry.get("actor") != caller.id:
        return pending.refused(NotFound(f"no audit entry {index} of yours", {"index": index})), None
    e = found[0]
    fields = e.entry
    facts = {
        "audit_index": index,
        "leaf_hash": e.leaf_hash.hex(),
        "request_hash": fields.get("request_hash"),
        "result_hash": fields.get("result_hash"),
        "request_id": fields.get("request_id"),
    }
    body = {**facts, "entry": fields}
    return dataclasses.replace(pending, answer=Answer(body)), facts


# ----------------------------------------------------------------- the disclosure report


def report_checkpoint(action: str, year: int) -> tuple[Pending, list[StoredCheckpoint]]:
    """``report.read`` (console) / ``report.compute`` (CLI): sign (or reuse) the
    checkpoint covering every entry before this call's; the report is then computed
    from the entries it covers (``sandbox.disclosure``), so anyone with a bundle of
    them recomputes it. Returns the call and a list that holds the checkpoint once
    the call is committed."""
    out: list[StoredCheckpoint] = []

    def apply(tx: LogTransaction) -> Answer:
        cp = tx.checkpoint()
        out.append(cp)
        return Answer(
            {"year": year, "checkpoint": {"size": cp.size, "root": cp.to_api()["root_hash"]}}
        )

    return Pending(action, fields={"year": year}, apply=_audit_checked(apply)), out


def entries_of(rt: Runtime, size: int, start_time: str, end_time: str) -> Sequence[dict[str, Any]]:
    """Every entry of ``[0, size)`` with ``start_time <= time < end_time``, parsed."""
    out: list[dict[str, Any]] = []
    cursor = 0
    while cursor < size:
        page = rt.audit.entries(start_time=start_time, end_time=end_time, cursor=cursor, limit=5000)
        for e in page.entries:
            if e.index >= size:
                return out
            out.append(e.entry)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return out

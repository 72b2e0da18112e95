"""The audited action (DESIGN §2.4, §2.5, §2.9): one call, one transaction, one entry.

Every call — API or CLI, allowed or refused — goes the same way:

1. the edge (``sandbox/api/calls.py``, ``sandbox/cli/common.py``) establishes who
   calls (a :class:`Caller`) and parses the request;
2. one action (a function in ``sandbox/actions/``) reads what it needs, does the
   call's heavy work (lookups, the DP engine) and returns a :class:`Pending`: the
   entry's fields, the scope the call counts against, and either the answer, the
   state change that produces it (``apply``) or the refusal;
3. :func:`commit` appends the entry through the audit log's group commit. In that one
   transaction it claims the call's nonce, counts the call against its scope's rate
   and quota, confirms the scope's status, records verification probes and applies
   the change — any of which may refuse the call — and writes the entry recording
   what happened. Nothing commits without its entry, no entry without its change;
4. the edge renders the :class:`Outcome` (the HTTP edge signs a receipt over it).

The answer is decided in step 3, never foreseen: what leaves is what the entry says.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from audit.entry import Entry, request_hash, result_hash
from audit.hashes import Digest, sha256
from audit.log import LogTransaction
from policies.errors import AuthError, Replayed, TokenExpired
from policies.limits import RateLimiter
from policies.nonces import NonceStore
from policies.principals import Principal
from policies.scopes import Scope, decimal_str
from products.errors import DomainError
from products.text import all_utf8, storable
from sandbox.errors import Internal, Unavailable, error_body, status_of
from sandbox.runtime import Runtime
from sandbox.verification.probes import Probe, record_probes

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who makes a call and how it reached us: the entry's actor fields.

    ``actor`` is a verified principal id, ``anonymous`` for a call whose signature
    did not verify (the issuer such a token named is kept apart, as ``claimed``: it
    was never proven), ``platform`` for the platform's own entries, or ``cli:USER``
    for a local command.
    """

    actor: str
    role: str
    request_hash: str | None
    client: str | None
    principal: Principal | None = None
    jti: str | None = None
    nonce_expires_at: datetime | None = None
    claimed: str | None = None
    session: str | None = None

    @classmethod
    def signed(
        cls,
        principal: Principal,
        *,
        jti: str,
        nonce_expires_at: datetime,
        request_hash: str,
        client: str | None,
    ) -> Caller:
        """A principal whose signed call verified (DESIGN §6)."""
        return cls(
            principal.id,
            principal.role.value,
            request_hash,
            client,
            principal,
            jti,
            nonce_expires_at,
        )

    @classmethod
    def console(
        cls, principal: Principal, *, session: str, request_hash: str, client: str | None
    ) -> Caller:
        """A principal signed in to the web console (DESIGN §12): its calls are its own,
        authenticated by the session its signed challenge opened; ``session`` is that
        session's public id (never the cookie's secret)."""
        return cls(
            principal.id,
            principal.role.value,
            request_hash,
            client,
            principal,
            session=session,
        )

    @classmethod
    def anonymous(cls, request_hash: str, client: str | None, claimed: str | None) -> Caller:
        """A call whose signature did not verify."""
        return cls("anonymous", "unauthenticated", request_hash, client, claimed=claimed)

    @classmethod
    def local(cls, argv: str, digest: Digest = sha256) -> Caller:
        """The operating-system account running a local CLI command (``cli:USER``);
        ``digest`` is the deployment suite's hash (DESIGN §13): pass ``rt.suite.digest``
        (the default, SHA-256, is right only for an ``ed25519-sha256`` deployment)."""
        return cls(
            f"cli:{getpass.getuser()}",
            "operator",
            request_hash("CLI", argv, b"", digest=digest),
            f"cli@{socket.gethostname()}",
        )

    @classmethod
    def platform(cls) -> Caller:
        """The platform itself (scheduled entries such as enumeration reviews)."""
        return cls("platform", "platform", None, None)


@dataclass(frozen=True)
class Answer:
    """What an allowed call answers: its JSON body (None: no body, e.g. a file that the
    edge streams after the commit), HTTP status, the epsilon it spent and entry fields
    decided with it."""

    body: dict[str, Any] | None
    status: int = 200
    epsilon: Decimal = Decimal(0)
    fields: Mapping[str, Any] = field(default_factory=dict)


#: The state change of a call, run in its entry's transaction (``tx.conn``, with
#: ``tx.index`` the entry's index): returns the answer, or raises a ``DomainError``
#: to refuse the call — before writing anything it would not want kept (it runs in a
#: savepoint, rolled back on any exception, so a refusal leaves nothing behind).
Apply = Callable[[LogTransaction], Answer]


@dataclass(frozen=True)
class Pending:
    """A call ready to commit: what its entry records and what it does."""

    action: str
    target: Mapping[str, str] = field(default_factory=dict)
    fields: Mapping[str, Any] = field(default_factory=dict)
    scope: Scope | None = None  # counted (rate, quota) and status-checked at commit
    calls: int = 1  # how many calls it counts for (batch items)
    probes: Sequence[Probe] = ()  # verification lookups, for enumeration detection
    answer: Answer | None = None
    apply: Apply | None = None
    refusal: DomainError | None = None
    receipt: bool = False
    request_id: str | None = None
    changes_state: bool = False  # this process's caches are cleared after the commit

    def refused(self, error: DomainError) -> Pending:
        """This call, refused with ``error`` (its entry fields and scope kept)."""
        return dataclasses.replace(self, refusal=error, answer=None, apply=None, probes=())

    def attempt(self, build: Callable[[], Pending]) -> Pending:
        """Return ``build()``, or this call refused with the ``DomainError`` it raised."""
        try:
            return build()
        except DomainError as exc:
            return self.refused(exc)


@dataclass(frozen=True)
class Outcome:
    """A committed call: its entry, and what the caller is to receive."""

    index: int
    leaf_hash: bytes
    status: int
    body: dict[str, Any] | None
    error: DomainError | None
    request_hash: str | None
    result_hash: str | None
    receipt: bool  # the edge signs a receipt into the answer
    request_id: str | None

    @property
    def allowed(self) -> bool:
        return self.error is None

    @property
    def retry_after(self) -> int | None:
        value = self.error.details.get("retry_after") if self.error is not None else None
        return value if isinstance(value, int) else None


def commit(rt: Runtime, caller: Caller, pending: Pending) -> Outcome:
    """Commit ``pending`` with its audit entry and return the outcome (see the module
    docstring). Raises ``audit.log.StoreError`` when the store fails: then nothing of
    the call was committed, and nothing may be released."""
    if pending.answer is None and pending.apply is None and pending.refusal is None:
        raise ValueError(f"{pending.action}: a call needs an answer, a change or a refusal")
    pending = _storable(pending)
    target = dict(pending.target)
    settled: list[Outcome] = []

    def write(tx: LogTransaction) -> Entry:
        now = rt.clock()
        error = pending.refusal
        counted = True
        if caller.jti is not None and caller.nonce_expires_at is not None:
            # A token whose window ended before its commit is refused unclaimed: its
            # nonce may already be pruned, and claiming it afresh would let a replay
            # through (NonceStore.prune). Neither it nor a replay counts as a call.
            if caller.nonce_expires_at <= now:
                error, counted = TokenExpired("token has expired", "expired"), False
            elif not NonceStore.claim(tx.conn, caller.actor, caller.jti, caller.nonce_expires_at):
                error, counted = Replayed("this call (jti) was already used", "replayed"), False
        scope = pending.scope
        if scope is not None and counted:
            # The order of DESIGN §5: a call over its scope's limits, or under a scope
            # no longer usable, is refused as such whatever else is wrong with it.
            error = RateLimiter.admit(tx.conn, scope, pending.calls, now) or error
        if error is None and scope is not None and pending.probes:
            record_probes(tx.conn, scope.id, now, pending.probes, rt.enumeration)
        answer = pending.answer
        if error is None and pending.apply is not None:
            answer, error = _apply(pending.apply, tx)
        outcome, entry = _settle(caller, pending, target, tx.index, answer, error, rt.suite.digest)
        settled.append(outcome)
        return entry

    appended = rt.audit.append(write)
    outcome = dataclasses.replace(settled[-1], leaf_hash=appended.leaf_hash)
    if pending.changes_state and outcome.allowed:
        rt.forget_cached()
    return outcome


def _apply(apply: Apply, tx: LogTransaction) -> tuple[Answer | None, DomainError | None]:
    savepoint = tx.conn.begin_nested()
    try:
        answer = apply(tx)
    except DomainError as exc:
        savepoint.rollback()
        return None, exc
    except SQLAlchemyError as exc:
        savepoint.rollback()  # raises in turn if the connection itself is gone
        _log.warning("a call's change failed in the store: %s", exc)
        return None, Unavailable("the store failed while applying the call; retry later")
    except Exception:
        savepoint.rollback()
        _log.exception("a call's change failed")
        return None, Internal("the call failed; it was recorded and nothing was released")
    savepoint.commit()
    return answer, None


def _settle(
    caller: Caller,
    pending: Pending,
    target: dict[str, str],
    index: int,
    answer: Answer | None,
    error: DomainError | None,
    digest: Digest,
) -> tuple[Outcome, Entry]:
    extra: dict[str, Any] = dict(pending.fields)
    if error is None and answer is None:  # an apply that returned nothing: a defect
        error = Internal("the call produced no answer")
    if error is None:
        assert answer is not None
        body, status = answer.body, answer.status
        extra.update(answer.fields)
    else:
        answer = None
        body, status = error_body(error), status_of(error)
    result = result_hash(body, digest=digest) if body is not None else None
    extra["status"] = status
    if pending.request_id is not None:
        extra["request_id"] = pending.request_id
    if caller.claimed is not None:
        extra["claimed_actor"] = caller.claimed
    if caller.session is not None:
        extra["console_session"] = caller.session
    entry = Entry(
        actor=caller.actor,
        role=caller.role,
        action="auth.refused" if isinstance(error, AuthError) else pending.action,
        target=target,
        request_hash=caller.request_hash,
        decision="allow" if error is None else "deny",
        reason=None if error is None else storable(f"{error.code}: {error.message}"[:500]),
        epsilon=decimal_str(answer.epsilon) if answer is not None else "0",
        result_hash=result,
        jti=caller.jti,
        client=caller.client,
        extra=extra,
    )
    outcome = Outcome(
        index=index,
        leaf_hash=b"",
        status=status,
        body=body,
        error=error,
        request_hash=caller.request_hash,
        result_hash=result,
        receipt=pending.receipt and error is None,
        request_id=pending.request_id,
    )
    return outcome, entry


def _storable(pending: Pending) -> Pending:
    """``pending`` with any lone surrogate or NUL in its recorded strings replaced
    (U+FFFD), and its fields checked in the caller's thread: inputs are checked at the
    edge; this is the last guard so that one odd value can never fail a batch."""
    target = _clean(dict(pending.target))
    fields = _clean(dict(pending.fields))
    # JSON round trip: what the entry records is what a client would parse.
    fields = json.loads(json.dumps(fields, default=str))
    if target == pending.target and fields == pending.fields:
        return pending
    return dataclasses.replace(pending, target=target, fields=fields)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value if all_utf8(value) else storable(value)
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value

"""Per-request state shared by the hooks and the handlers: who called, what to audit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flask import g, request

from policies.principals import Principal
from sandbox.actions.admission import CallAdmission
from sandbox.actions.note import AuditNote
from sandbox.api.permissions import action_of


@dataclass
class CallState:
    """Facts about the HTTP request, gathered before any handler runs."""

    method: str
    target: str  # path and query as sent (the ``htu`` a client signs)
    client: str
    body: bytes = b""
    body_sha256: bytes = b""
    request_hash: str = ""
    upload: Path | None = None  # streamed request body, for data uploads
    principal: Principal | None = None
    jti: str | None = None
    claimed_issuer: str | None = None
    audited: bool = True
    note: AuditNote | None = None
    admission: CallAdmission | None = None  # verification calls (admission.py)


def state() -> CallState:
    """Return this request's ``CallState`` (set by the ``before_request`` hook)."""
    st: CallState = g.call_state
    return st


def note(**target: str | None) -> AuditNote:
    """Start (or replace) the audit note of this call — its action is the endpoint's
    (``permissions.ENDPOINTS``) — and return it."""
    n = AuditNote(
        action=action_of(request.endpoint),
        target={k: v for k, v in target.items() if v is not None},
        admission=state().admission,
    )
    state().note = n
    return n


def caller() -> Principal:
    """Return the authenticated principal (handlers only run after authentication)."""
    p = state().principal
    assert p is not None, "handler reached without an authenticated caller"
    return p

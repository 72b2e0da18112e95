"""Per-request state shared by the hooks and the handlers: who called, what to audit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import g

from policies.principals import Principal


@dataclass
class AuditNote:
    """What the handler wants recorded about this call (DESIGN §7 entry fields)."""

    action: str
    target: dict[str, str] = field(default_factory=dict)
    epsilon: str = "0"
    extra: dict[str, Any] = field(default_factory=dict)
    receipt: bool = False
    request_id: str | None = None
    after_append: list[Callable[[int], None]] = field(default_factory=list)


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


def state() -> CallState:
    """Return this request's ``CallState`` (set by the ``before_request`` hook)."""
    st: CallState = g.call_state
    return st


def note(action: str, **target: str | None) -> AuditNote:
    """Start (or replace) the audit note of this call and return it."""
    n = AuditNote(action=action, target={k: v for k, v in target.items() if v is not None})
    state().note = n
    return n


def caller() -> Principal:
    """Return the authenticated principal (handlers only run after authentication)."""
    p = state().principal
    assert p is not None, "handler reached without an authenticated caller"
    return p

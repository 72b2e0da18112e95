"""Refusals decided by policy: authentication, scopes, budget, rate limits.

They extend ``products.errors.DomainError``; the HTTP status of each code is set in
``sandbox.errors`` only. ``details["reason"]`` names the exact check that failed,
so a client (and the audit entry) can tell e.g. a wrong ``htu`` from a wrong ``bh``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from products.errors import DomainError


class AuthError(DomainError):
    """A signed-call check failed (401)."""

    code = "unauthenticated"

    def __init__(
        self,
        message: str,
        reason: str,
        *,
        issuer: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, {"reason": reason, **(details or {})})
        self.reason = reason
        self.issuer = issuer  # the *claimed* issuer, for the audit entry only


class Unauthenticated(AuthError):
    code = "unauthenticated"


class BadSignature(AuthError):
    code = "bad_signature"


class TokenExpired(AuthError):
    code = "token_expired"


class Replayed(AuthError):
    code = "replayed"


class ScopeRevoked(DomainError):
    code = "scope_revoked"


class ScopeSuspended(DomainError):
    code = "scope_suspended"


class ScopeExpired(DomainError):
    code = "scope_expired"


class OperationNotAllowed(DomainError):
    code = "operation_not_allowed"


class BudgetExhausted(DomainError):
    code = "budget_exhausted"


class Throttled(DomainError):
    """Too many calls; ``retry_after`` seconds tell the client when to come back (429)."""

    code = "rate_limited"

    def __init__(
        self, message: str, retry_after: int, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message, {"retry_after": retry_after, **(details or {})})
        self.retry_after = retry_after


class RateLimited(Throttled):
    code = "rate_limited"


class QuotaExceeded(Throttled):
    code = "quota_exceeded"

"""The one map from error codes (DESIGN §5) to HTTP statuses, and the JSON error body.

Every failure — domain refusals, Werkzeug's own 404/405/413/415, malformed JSON,
schema errors from flask-smorest — leaves as ``{"error": {"code", "message",
"details"}}``; never an HTML page. Only §5's codes and statuses are used: clients
switch on that fixed list, so Werkzeug's 411/415/422 leave as 400 ``invalid_request``
and its 414/431 as 413 ``too_large``.
"""

from __future__ import annotations

from typing import Any

from products.errors import DomainError

STATUS_BY_CODE: dict[str, int] = {
    "invalid_request": 400,
    "invalid_sql": 400,
    "unknown_column": 400,
    "column_not_allowed": 400,
    "unsupported_query": 400,
    "unauthenticated": 401,
    "bad_signature": 401,
    "token_expired": 401,
    "replayed": 401,
    "forbidden": 403,
    "scope_revoked": 403,
    "scope_suspended": 403,
    "scope_expired": 403,
    "operation_not_allowed": 403,
    "budget_exhausted": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "too_large": 413,
    "rate_limited": 429,
    "quota_exceeded": 429,
    "internal": 500,
    "unavailable": 503,
}

CODE_BY_HTTP_STATUS: dict[int, str] = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    411: "invalid_request",
    413: "too_large",
    414: "too_large",
    415: "invalid_request",
    422: "invalid_request",
    429: "rate_limited",
    431: "too_large",
}


def status_of(error: DomainError) -> int:
    """Return the HTTP status for a domain error's code."""
    return STATUS_BY_CODE.get(error.code, 400)


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the DESIGN §5 error object."""
    return {"error": {"code": code, "message": message, "details": details or {}}}

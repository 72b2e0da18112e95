"""The service's own errors, and the one map from DESIGN §5 codes to HTTP statuses.

The errors extend the shared ``products.errors`` tree so that the one code→status map
below, the HTTP edge and the one CLI printer handle all of them alike. The status of a
refusal is recorded in its audit entry whichever edge the call came through.
"""

from __future__ import annotations

import json
from typing import Any

from audit.errors import AuditError
from products.errors import DomainError, InvalidRequest

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
    "model_not_filed": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "too_large": 413,
    "rate_limited": 429,
    "quota_exceeded": 429,
    "internal": 500,
    "unavailable": 503,
}

#: Seconds a client is told to wait after a 503 without a more precise figure.
RETRY_AFTER_S = 5


def status_of(error: DomainError) -> int:
    """Return the HTTP status of a domain error's code."""
    return STATUS_BY_CODE.get(error.code, 400)


def error_body(error: DomainError) -> dict[str, Any]:
    """Return the DESIGN §5 error object of ``error`` exactly as a client parses it
    (a JSON round trip: e.g. integer keys in details become strings)."""
    body = {"error": {"code": error.code, "message": error.message, "details": error.details}}
    parsed: dict[str, Any] = json.loads(json.dumps(body, ensure_ascii=False, default=str))
    return parsed


class ModelNotFiled(DomainError):
    """A model product has no filed version to score with (DESIGN §11.3: 算法备案)."""

    code = "model_not_filed"


class InvalidSql(DomainError):
    """The text is not one parsable SQL statement (400 ``invalid_sql``)."""

    code = "invalid_sql"


class UnknownColumn(DomainError):
    """The query names a column the product does not have (400 ``unknown_column``)."""

    code = "unknown_column"


class ColumnNotAllowed(DomainError):
    """The column exists but the scope or the manifest forbids this use (400)."""

    code = "column_not_allowed"


class UnsupportedQuery(DomainError):
    """Valid SQL outside the supported subset (400 ``unsupported_query``)."""

    code = "unsupported_query"


class QueryFailed(DomainError):
    """The isolated engine could not finish the query (memory limit, engine failure).

    Reported as 413 ``too_large``: the query asked for more work than the sandbox
    allows, which the caller can fix by narrowing it. (Running out of time is not
    this: see ``QueryTimeout``.)
    """

    code = "too_large"


class MethodNotAllowed(DomainError):
    """The path exists but not with this HTTP method (405)."""

    code = "method_not_allowed"


class Unavailable(DomainError):
    """A store, disk or time limit of the platform failed the call; nothing was
    released (503, with ``Retry-After``)."""

    code = "unavailable"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, {"retry_after": RETRY_AFTER_S, **(details or {})})


class Internal(DomainError):
    """A defect of the service, recorded as such (500 ``internal``)."""

    code = "internal"


class QueryTimeout(Unavailable):
    """The query's engine work (SQL, noise, post-processing) ran past the platform's
    time limit and was stopped; nothing was released or charged.

    503 ``unavailable`` (DESIGN §5: "a store, disk or time limit of the platform, with
    Retry-After"): ``details`` carries ``rule: "timeout"``, ``limit_s`` and
    ``retry_after`` (whole seconds, for the ``Retry-After`` header).
    """


class UnsupportedMediaType(DomainError):
    """The body's Content-Type is not one the endpoint accepts: 400 ``invalid_request``
    (DESIGN §5 has no 415 code)."""

    code = "invalid_request"


def from_audit(error: AuditError) -> DomainError:
    """The domain refusal for an audit-package error, by its code."""
    if error.code == "unavailable":
        return Unavailable(error.message)
    if error.code == "invalid_request":
        return InvalidRequest(error.message)
    return Internal(error.message)

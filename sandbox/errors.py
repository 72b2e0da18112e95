"""Errors raised by the service layer (query engine, API plumbing).

They extend the shared ``products.errors`` tree so that the one code→HTTP map in
``sandbox.api.errors`` and the one CLI printer handle all of them alike.
"""

from __future__ import annotations

from products.errors import DomainError


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


class ServiceUnavailable(DomainError):
    """A dependency (audit log, store) could not record the call; nothing was released."""

    code = "unavailable"


class QueryTimeout(ServiceUnavailable):
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

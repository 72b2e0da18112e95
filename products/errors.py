"""The domain error tree shared by every package above ``audit``.

Each error carries the machine-readable code of DESIGN §5. The HTTP status for a
code is decided in exactly one place (``sandbox.errors``); the CLI turns any of
these into one readable line (``sandbox.cli``). Library exceptions never leave a
package: they are caught at the boundary and re-raised as one of these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class DomainError(Exception):
    """Base of every refusal the service can explain to its caller."""

    code: ClassVar[str] = "invalid_request"

    def __init__(self, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def as_dict(self) -> dict[str, Any]:
        """Return the DESIGN §5 error object (without the outer ``error`` key)."""
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidRequest(DomainError):
    """The request is malformed or fails validation (400 ``invalid_request``)."""

    code = "invalid_request"


class NotFound(DomainError):
    """The named resource does not exist or is not visible to the caller (404)."""

    code = "not_found"


class Conflict(DomainError):
    """The resource already exists or is in a state that forbids the change (409)."""

    code = "conflict"


class TooLarge(DomainError):
    """The request body or the requested work exceeds a configured limit (413)."""

    code = "too_large"


class Forbidden(DomainError):
    """The caller is known but may not do this (403 ``forbidden``)."""

    code = "forbidden"


class StorageUnavailable(DomainError):
    """The platform's own disk could not take the work (full, unwritable): 503
    ``unavailable``; nothing was written."""

    code = "unavailable"

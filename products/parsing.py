"""Parsing at the edge: a marshmallow schema's load, refusals as ``InvalidRequest``.

The same schemas validate API bodies (``@blp.arguments`` in ``sandbox/api``, which also
writes them into the OpenAPI document), CLI inputs and files; ``parse`` is how code
outside the HTTP edge applies one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError

from products.errors import InvalidRequest


def parse(schema: type[Schema], data: Any, what: str) -> Any:
    """Return ``schema().load(data)``. Raises ``InvalidRequest`` ("invalid <what>") whose
    ``details.fields`` map each offending field path to its messages."""
    if not isinstance(data, Mapping):
        raise InvalidRequest(
            f"{what} must be an object", {"fields": {"_schema": ["not an object"]}}
        )
    try:
        return schema().load(dict(data))
    except ValidationError as exc:
        messages = exc.normalized_messages()  # type: ignore[no-untyped-call]
        raise InvalidRequest(f"invalid {what}", {"fields": messages}) from None
    except RecursionError:
        raise InvalidRequest(f"{what} nests too deeply") from None


def field_error(exc: InvalidRequest, default: str) -> ValidationError:
    """A domain refusal raised inside a schema hook, as the field error marshmallow
    reports (its ``details.field`` names the field, else ``default``)."""
    fields = exc.details.get("fields")
    if isinstance(fields, dict) and fields:
        return ValidationError(fields)
    return ValidationError({str(exc.details.get("field", default)): [exc.message]})

"""The flask-smorest Blueprint of this API.

A body or query that does not match its schema is a 400 ``invalid_request`` (DESIGN §5
has no 422): the parser and the OpenAPI document both say so. Unknown fields are
refused in queries as in bodies (each schema says ``unknown = RAISE``): a misspelt
filter must not silently widen an answer.
"""

from __future__ import annotations

from typing import Any

import flask_smorest
from webargs.flaskparser import FlaskParser


class _Parser(FlaskParser):  # type: ignore[misc]
    DEFAULT_VALIDATION_STATUS = 400
    # None: each schema's own ``unknown`` rule applies (webargs excludes unknown query
    # parameters by default).
    DEFAULT_UNKNOWN_BY_LOCATION: dict[str, str | None] = {  # noqa: RUF012
        location: None for location in FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION
    }


class Blueprint(flask_smorest.Blueprint):  # type: ignore[misc]
    ARGUMENTS_PARSER = _Parser()

    def arguments(self, schema: Any, **kwargs: Any) -> Any:
        # One schema instance per endpoint: given a class, webargs builds an instance
        # per request, deep-copying its fields (half a millisecond a call).
        return super().arguments(schema() if isinstance(schema, type) else schema, **kwargs)

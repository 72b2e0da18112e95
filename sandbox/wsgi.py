"""Facts of a WSGI request that both HTTP edges (the API's, ``sandbox/api/calls.py``,
and the console's, ``sandbox/console/edge.py``) record in the same form."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote


def request_target(environ: dict[str, Any]) -> str:
    """Return the path and query exactly as the client sent them (the signed ``htu``,
    and what an entry's ``request_hash`` covers)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if isinstance(raw, str) and raw.startswith("/"):
        return raw
    path = quote(environ.get("PATH_INFO", "/"), safe="/:@!$&'()*+,;=-._~%")
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path

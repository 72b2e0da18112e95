"""The HTTP edge of every call: read, authenticate, hand to one action, render.

1. ``before_request`` bounds and reads the body (uploads stream to disk), hashes it,
   verifies the signed call (DESIGN §6) into a :class:`~sandbox.actions.call.Caller`
   and checks the role table (``permissions.py``).
2. The handler parses its input, calls one action and returns ``respond(pending)``:
   the call is committed with its audit entry (``sandbox/actions/call.py``) and its
   outcome rendered with ``X-Audit-Index`` and, where the answer carries one, a
   receipt signed over what the entry records.
3. A refusal raised before the handler returns (a bad signature, a role that may not
   call the endpoint, an unknown path, a malformed body) is committed the same way by
   the error handlers, so every call leaves exactly one entry before its response.

A failure after the commit never writes a second entry: the response says which entry
recorded the call. When the store cannot record a call at all, the answer is 503
``unavailable`` and nothing was released.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, g, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from audit.entry import request_hash
from audit.errors import AuditError
from audit.hashes import new_hash
from audit.receipts import receipt_claims
from policies.calls import VerifiedCall, verify_call
from policies.errors import AuthError
from policies.principals import Principal
from products.errors import DomainError, Forbidden, InvalidRequest, NotFound, TooLarge
from products.text import all_utf8, nests_deeper
from sandbox.actions.call import Caller, Outcome, Pending, commit
from sandbox.actions.products import Upload
from sandbox.api.permissions import action_of, allowed
from sandbox.errors import (
    RETRY_AFTER_S,
    Internal,
    MethodNotAllowed,
    Unavailable,
    UnsupportedMediaType,
    error_body,
    from_audit,
    status_of,
)
from sandbox.runtime import Runtime
from sandbox.wsgi import request_target

_log = logging.getLogger(__name__)

UNAUDITED_ENDPOINTS = frozenset(
    {"meta.health", "meta.keys", "meta.docs", "api-docs.openapi_json", "static", "favicon"}
)
UPLOAD_ENDPOINTS = frozenset({"products.upload"})
# Edges with an authentication of their own, whose calls these hooks leave alone: the
# web console (``sandbox/console``: signed sign-in challenges, then sessions) commits
# every call through the same ``commit`` as calls of the signed-in principal.
OWN_EDGES = frozenset({"console"})
CHUNK = 1 << 20
# Request bodies of DESIGN §5 nest a few levels; deeper ones are refused before any
# recursive walk (the UTF-8 check, the parsers) could exhaust the stack.
MAX_JSON_DEPTH = 32
# The entry target named by a path parameter, for calls refused before their action.
TARGET_OF_ARG = {
    "product_id": "product",
    "scope_id": "scope",
    "vp_id": "verification_product",
    "principal_id": "principal",
    "mp_id": "model_product",
}


@dataclass
class Request:
    """Facts about the HTTP request gathered before its handler runs."""

    method: str
    target: str  # path and query as sent (the ``htu`` a client signs)
    client: str
    body: bytes = b""
    body_sha256: bytes = b""
    request_hash: str = ""
    body_read: bool = False
    upload: Path | None = None  # the streamed body of a data upload
    caller: Caller | None = None


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["sandbox.runtime"]
    return rt


def _request() -> Request:
    req: Request = g.sandbox_request
    return req


def caller() -> Principal:
    """Return the authenticated principal (handlers run only after authentication)."""
    c = _request().caller
    assert c is not None and c.principal is not None, "handler reached without a caller"
    return c.principal


def upload_path() -> Path | None:
    """The streamed body of a data upload, if any."""
    return _request().upload


def _read_body(req: Request, rt: Runtime) -> None:
    """Read (or stream to disk) the request body, computing its hashes on the way."""
    # request_hash in the suite's hash (DESIGN §13); bh is SHA-256 in every suite (§6).
    rh = new_hash(rt.suite.hash_name)
    rh.update(f"{req.method}\n{req.target}\n".encode())
    bh = hashlib.sha256()
    if request.endpoint in UPLOAD_ENDPOINTS:
        request.max_content_length = rt.settings.max_upload_bytes
        uploads = rt.settings.products_dir / ".uploads"
        uploads.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=uploads, suffix=".upload")
        req.upload = Path(name)
        with os.fdopen(fd, "wb") as f:
            while chunk := request.stream.read(CHUNK):
                f.write(chunk)
                rh.update(chunk)
                bh.update(chunk)
    else:
        request.max_content_length = rt.settings.max_json_bytes
        req.body = request.get_data(cache=True)
        rh.update(req.body)
        bh.update(req.body)
    req.body_read = True
    req.body_sha256 = bh.digest()
    req.request_hash = rh.hexdigest()


def before_request() -> None:
    rt = runtime()
    req = Request(
        method=request.method,
        target=request_target(request.environ),
        client=request.remote_addr or "",
    )
    if request.blueprint in OWN_EDGES:
        return
    g.sandbox_request = req
    if request.endpoint in UNAUDITED_ENDPOINTS:
        return
    # Until the call is authenticated it is anonymous; its hash covers what was read.
    req.request_hash = request_hash(req.method, req.target, b"", digest=rt.suite.digest)
    req.caller = Caller.anonymous(req.request_hash, req.client, None)
    # Uploads are streamed to disk only once the caller is known (and allowed): their
    # body hash is checked after the token; JSON bodies are small and read first.
    streamed = request.endpoint in UPLOAD_ENDPOINTS
    if not streamed:
        _read_body(req, rt)
        req.caller = Caller.anonymous(req.request_hash, req.client, None)
    try:
        call = verify_call(
            request.headers.get("Authorization"),
            method=req.method,
            path_and_query=req.target,
            body_sha256=None if streamed else req.body_sha256,
            policy=rt.call_policy,
            principals=rt.principals.find,
            now=rt.clock(),
        )
    except AuthError as exc:
        req.caller = Caller.anonymous(req.request_hash, req.client, exc.issuer)
        raise
    req.caller = _signed(call, req)
    if request.endpoint is None:
        return  # unknown path: Flask raises 404 next, recorded as the caller's call
    if not allowed(request.endpoint, call.principal.role):
        raise Forbidden(
            f"role {call.principal.role.value!r} may not call {req.method} "
            f"{request.url_rule.rule if request.url_rule else req.target}",
            {"role": call.principal.role.value},
        )
    # Path and query values reach the stores as parameters: refused like JSON strings
    # (products/text.py), or a NUL would fail PostgreSQL.
    if not all_utf8(request.view_args or {}) or not all_utf8(dict(request.args.lists())):
        raise InvalidRequest(
            "the path or query holds a lone surrogate or a NUL (%00); it must be Unicode text"
        )
    if not streamed and req.body:
        json_body()  # JSON bodies are checked here, before any parser walks them
    if streamed:
        _read_body(req, rt)
        req.caller = _signed(call, req)  # with the hash of the body now read
        call.check_body(req.body_sha256)


def _signed(call: VerifiedCall, req: Request) -> Caller:
    return Caller.signed(
        call.principal,
        jti=call.jti,
        nonce_expires_at=call.replay_window_ends,
        request_hash=req.request_hash,
        client=req.client,
    )


def json_body() -> dict[str, Any]:
    """Return the request's JSON object body.

    Raises ``InvalidRequest`` for a wrong content type, malformed JSON, a non-object,
    nesting deeper than ``MAX_JSON_DEPTH`` or strings that are not Unicode text.
    """
    req = _request()
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {request.mimetype or 'missing'!r}"
        )
    try:
        data = json.loads(req.body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"malformed JSON body: {exc}") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise InvalidRequest(f"the JSON body holds a number that cannot be read: {exc}") from None
    except RecursionError:
        raise InvalidRequest(
            f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels", {"limit": MAX_JSON_DEPTH}
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("the JSON body must be an object")
    if nests_deeper(data, MAX_JSON_DEPTH):
        raise InvalidRequest(
            f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels", {"limit": MAX_JSON_DEPTH}
        )
    if not all_utf8(data):
        raise InvalidRequest(
            "the JSON body holds a lone surrogate (\\ud800-\\udfff) or a NUL (\\u0000); "
            "strings must be valid Unicode text"
        )
    return data


def respond(pending: Pending) -> Response:
    """Commit ``pending`` with its audit entry and render its outcome."""
    return render(_commit(pending))


def respond_csv(pending: Pending) -> Response:
    """``respond`` for an answer of ``columns`` and ``rows`` the client asked for as
    CSV (``Accept: text/csv``): the entry's ``result_hash`` is that of the JSON answer
    (fetch it as JSON to check it); the receipt travels in ``X-Receipt``."""
    outcome = _commit(pending)
    resp = render(outcome)
    if not outcome.allowed or outcome.body is None:
        return resp
    body = json.loads(resp.get_data(as_text=True))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(body.get("columns", []))
    writer.writerows(["" if v is None else v for v in row] for row in body.get("rows", []))
    resp.set_data(out.getvalue().encode("utf-8"))
    resp.mimetype = "text/csv"
    if "receipt" in body:
        resp.headers["X-Receipt"] = body["receipt"]
    if isinstance(body.get("release"), str):
        resp.headers["X-Release"] = body["release"]
    if "epsilon_spent" in body:
        resp.headers["X-Epsilon-Spent"] = str(body["epsilon_spent"])
    return resp


def respond_upload(up: Upload) -> Response:
    """``respond`` for a data upload: its loaded file is removed unless the call is
    allowed (refused, or not recorded at all)."""
    try:
        outcome = _commit(up.pending)
    except BaseException:
        up.discard()
        raise
    if not outcome.allowed:
        up.discard()
    return render(outcome)


def _commit(pending: Pending) -> Outcome:
    req = _request()
    if g.get("sandbox_outcome") is not None:
        raise RuntimeError("a call commits once")  # a defect: never two entries
    assert req.caller is not None
    outcome = commit(runtime(), req.caller, pending)
    g.sandbox_outcome = outcome
    return outcome


def render(outcome: Outcome) -> Response:
    """The HTTP response of a committed call: its body (with a receipt when the call
    carries one), status, ``X-Audit-Index`` and ``Retry-After``."""
    body = outcome.body
    if outcome.receipt and body is not None and outcome.request_hash is not None:
        rt = runtime()
        claims = receipt_claims(
            iss=rt.settings.audience,
            iat=int(rt.clock().timestamp()),
            audit_index=outcome.index,
            leaf_hash=outcome.leaf_hash,
            request_hash=outcome.request_hash,
            result_hash=outcome.result_hash,
            request_id=outcome.request_id,
        )
        body = {**body, "receipt": rt.keys.sign_receipt(claims)}
    text = "" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    resp = current_app.response_class(text, status=outcome.status, mimetype="application/json")
    resp.headers["X-Audit-Index"] = str(outcome.index)
    if outcome.retry_after is not None:
        resp.headers["Retry-After"] = str(outcome.retry_after)
    allow = g.get("sandbox_allow")
    if allow and outcome.status == 405:
        resp.headers["Allow"] = allow
    if not _request().body_read:
        # The body was not read (too large, or refused before): its bytes would be
        # taken for the next request on this connection.
        resp.headers["Connection"] = "close"
    return resp


def _refuse(error: DomainError) -> Response:
    """Commit a call refused before its action returned, and render the refusal."""
    if request.endpoint in UNAUDITED_ENDPOINTS:  # unsigned, unaudited (DESIGN §5)
        return current_app.response_class(
            json.dumps(error_body(error)), status=status_of(error), mimetype="application/json"
        )
    done: Outcome | None = g.get("sandbox_outcome")
    if done is not None:
        return _after_commit(done, error)
    args = request.view_args or {}
    target = {TARGET_OF_ARG[k]: str(v) for k, v in args.items() if k in TARGET_OF_ARG}
    pending = Pending(action_of(request.endpoint), target=target, refusal=error)
    try:
        return respond(pending)
    except (AuditError, SQLAlchemyError, OSError):
        _log.exception("the call could not be recorded; nothing was released")
        return _unrecorded()


def _after_commit(done: Outcome, error: DomainError) -> Response:
    # The entry exists; its answer could not be rendered. Say which entry holds it
    # rather than pretend nothing happened (a repeated query returns the same release).
    _log.error("the answer of entry %d could not be sent: %s", done.index, error.message)
    body = {
        "error": {
            "code": "unavailable",
            "message": f"the call was recorded as audit entry {done.index} but its answer "
            "could not be sent; repeat the request (an identical query is answered from "
            "its stored release at no charge)",
            "details": {"audit_index": done.index, "recorded": True},
        }
    }
    resp = current_app.response_class(json.dumps(body), status=503, mimetype="application/json")
    resp.headers["X-Audit-Index"] = str(done.index)
    resp.headers["Retry-After"] = str(RETRY_AFTER_S)
    return resp


def _unrecorded() -> Response:
    body = {
        "error": {
            "code": "unavailable",
            "message": "the call could not be recorded in the audit log; nothing was "
            "released, retry later",
            "details": {"retry_after": RETRY_AFTER_S},
        }
    }
    resp = current_app.response_class(json.dumps(body), status=503, mimetype="application/json")
    resp.headers["Retry-After"] = str(RETRY_AFTER_S)
    return resp


# Werkzeug's statuses as DESIGN §5 codes (its 411/415/422 become 400 invalid_request,
# its 414/431 413 too_large): clients switch on §5's fixed list only.
_ERROR_OF_STATUS: dict[int, type[DomainError]] = {
    404: NotFound,
    405: MethodNotAllowed,
    413: TooLarge,
    414: TooLarge,
    431: TooLarge,
}


def handle_domain_error(exc: DomainError) -> Response:
    return _refuse(exc)


def handle_audit_error(exc: AuditError) -> Response:
    return _refuse(from_audit(exc))


def handle_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status >= 500:
        return _refuse(Internal(exc.description or exc.name))
    data = getattr(exc, "data", None)  # flask-smorest/webargs validation messages
    if isinstance(data, dict) and "messages" in data:
        messages = data["messages"]  # keyed by where the values were: json, query
        fields: Any = messages
        if isinstance(messages, dict) and len(messages) == 1:
            (fields,) = messages.values()
        return _refuse(InvalidRequest("the request does not match the schema", {"fields": fields}))
    if status == 405:
        allow = dict(exc.get_headers()).get("Allow")
        g.sandbox_allow = allow
    cls = _ERROR_OF_STATUS.get(status, InvalidRequest)
    return _refuse(cls(exc.description or exc.name))


def handle_unexpected(exc: Exception) -> Response:
    if isinstance(exc, SQLAlchemyError | OSError):
        _log.warning("store or disk failure: %s", exc)
        return _refuse(Unavailable("a store or disk of the platform failed; retry later"))
    _log.exception("unhandled error")
    return _refuse(Internal("internal error; the call was recorded"))


def after_request(response: Response) -> Response:
    req: Request | None = g.get("sandbox_request")
    if req is None or request.endpoint in UNAUDITED_ENDPOINTS:
        return response
    if g.get("sandbox_outcome") is None and response.status_code < 500:
        # A handler answered without committing: a defect. Nothing unrecorded leaves.
        _log.error("endpoint %s answered without an audit entry", request.endpoint)
        return _refuse(Internal("internal error: the answer was withheld"))
    return response


def teardown_request(_exc: BaseException | None) -> None:
    req: Request | None = g.get("sandbox_request")
    if req is not None and req.upload is not None:
        req.upload.unlink(missing_ok=True)


def install(app: Flask) -> None:
    """Register the hooks and error handlers on ``app``."""
    app.before_request(before_request)
    app.after_request(after_request)
    app.teardown_request(teardown_request)
    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(AuditError, handle_audit_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)

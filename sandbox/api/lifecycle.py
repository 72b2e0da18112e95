"""The life of every request: read the body, authenticate, authorise, run, audit, sign.

1. ``before_request``: bound and read the body (streamed to a file for uploads),
   hash it, verify the signed call (DESIGN §6) and the role's permission.
2. The handler runs and leaves an ``AuditNote`` (action, target, epsilon, …).
3. ``after_request``: compute ``result_hash`` over the response object, append the
   audit entry and wait until it is durable (DESIGN §2.5), set ``X-Audit-Index``,
   and sign a receipt into query and verification answers.

Refusals at any step are audited the same way, so every call, allowed or denied,
leaves exactly one entry before its response does.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from audit.entry import request_hash as audit_request_hash
from audit.entry import result_hash as audit_result_hash
from audit.errors import AuditError
from audit.receipts import receipt_claims
from policies.calls import verify_call
from policies.errors import AuthError
from products.errors import DomainError, Forbidden, InvalidRequest
from products.text import all_utf8, nests_deeper, storable
from sandbox.actions.admission import CallAdmission
from sandbox.actions.at_commit import AtCommit
from sandbox.actions.note import AuditNote
from sandbox.api.context import CallState, state
from sandbox.api.errors import CODE_BY_HTTP_STATUS, STATUS_BY_CODE, error_body, status_of
from sandbox.api.permissions import action_of, allowed
from sandbox.runtime import Runtime

UNAUDITED_ENDPOINTS = frozenset(
    {"meta.health", "meta.keys", "meta.docs", "api-docs.openapi_json", "static"}
)
UPLOAD_ENDPOINTS = frozenset({"products.upload"})
# Calls that change no data: their nonce, counters and probes are committed with their
# audit entry, and they are admitted or refused there (sandbox/actions/admission.py).
ADMITTED_AT_COMMIT = frozenset({"verifications.verify_one", "verifications.batch"})
CHUNK = 1 << 20
# Request bodies of DESIGN §5 nest a few levels; deeper ones are refused before any
# recursive walk (the UTF-8 check, the handlers) could exhaust the stack.
MAX_JSON_DEPTH = 32


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["sandbox.runtime"]
    return rt


def request_target(environ: dict[str, Any]) -> str:
    """Return the path and query exactly as the client sent them (the signed ``htu``)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if isinstance(raw, str) and raw.startswith("/"):
        return raw
    path = quote(environ.get("PATH_INFO", "/"), safe="/:@!$&'()*+,;=-._~%")
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def _read_body(st: CallState, rt: Runtime) -> None:
    """Read (or stream to disk) the request body, computing its hashes on the way."""
    prefix = f"{st.method}\n{st.target}\n".encode()
    rh = hashlib.sha256(prefix)
    bh = hashlib.sha256()
    if request.endpoint in UPLOAD_ENDPOINTS:
        request.max_content_length = rt.settings.max_upload_bytes
        uploads = rt.settings.products_dir / ".uploads"
        uploads.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=uploads, suffix=".upload")
        st.upload = Path(name)
        with os.fdopen(fd, "wb") as f:
            while chunk := request.stream.read(CHUNK):
                f.write(chunk)
                rh.update(chunk)
                bh.update(chunk)
    else:
        request.max_content_length = rt.settings.max_json_bytes
        st.body = request.get_data(cache=True)
        rh.update(st.body)
        bh.update(st.body)
    st.body_sha256 = bh.digest()
    st.request_hash = rh.hexdigest()


def before_request() -> None:
    rt = runtime()
    st = CallState(
        method=request.method,
        target=request_target(request.environ),
        client=request.remote_addr or "",
    )
    g.call_state = st
    if request.endpoint in UNAUDITED_ENDPOINTS:
        st.audited = False
        return
    # Uploads are streamed to disk only once the caller is known (and allowed):
    # their body hash is checked after the token; JSON bodies are small and read first.
    streamed = request.endpoint in UPLOAD_ENDPOINTS
    if not streamed:
        _read_body(st, rt)
    deferred = request.endpoint in ADMITTED_AT_COMMIT
    try:
        call = verify_call(
            request.headers.get("Authorization"),
            method=st.method,
            path_and_query=st.target,
            body_sha256=None if streamed else st.body_sha256,
            policy=rt.call_policy,
            principals=rt.principals.find,
            nonces=None if deferred else rt.nonces,
            now=rt.clock(),
        )
    except AuthError as exc:
        st.claimed_issuer = exc.issuer
        st.note = AuditNote(action="auth.refused")
        raise
    st.principal = call.principal
    st.jti = call.jti
    if deferred:
        st.admission = CallAdmission(
            issuer=call.principal.id,
            jti=call.jti,
            nonce_expires_at=call.replay_window_ends,
            limiter=rt.limiter,
            enumeration=rt.enumeration,
            clock=rt.clock,
            render=render_refusal,
        )
    if request.endpoint is None:
        return  # unknown path: Flask raises 404 next, audited as the caller's call
    if not allowed(request.endpoint, call.principal.role):
        st.note = AuditNote(action=_default_action())
        raise Forbidden(
            f"role {call.principal.role.value!r} may not call {st.method} "
            f"{request.url_rule.rule if request.url_rule else st.target}",
            {"role": call.principal.role.value},
        )
    # Path and query values reach the stores as parameters: refused like JSON strings
    # (products/text.py), or a NUL would fail PostgreSQL with a 500.
    if not all_utf8(request.view_args or {}) or not all_utf8(dict(request.args.lists())):
        raise InvalidRequest(
            "the path or query holds a lone surrogate or a NUL (%00); it must be Unicode text"
        )
    if streamed:
        _read_body(st, rt)
        try:
            call.check_body(st.body_sha256)
        except AuthError:
            st.note = AuditNote(action="auth.refused")
            raise


def _default_action() -> str:
    return action_of(request.endpoint)


def _json_of(response: Response) -> Any:
    obj = g.get("response_obj")
    if obj is not None:
        return obj
    if response.is_json and not response.is_streamed:
        return response.get_json(silent=True)
    return None


def after_request(response: Response) -> Response:
    st: CallState | None = g.get("call_state")
    if st is None or not st.audited:
        return response
    rt = runtime()
    if st.upload is not None:
        st.upload.unlink(missing_ok=True)
    note = st.note or AuditNote(action=_default_action())
    obj = _json_of(response)
    denied = response.status_code >= 400
    reason = None
    if denied and isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        reason = f"{obj['error'].get('code')}: {obj['error'].get('message')}"[:500]
    principal = st.principal
    fields: dict[str, Any] = {
        "actor": principal.id if principal else (st.claimed_issuer or "anonymous"),
        "role": principal.role.value if principal else "unauthenticated",
        "action": note.action,
        "target": note.target,
        "request_hash": st.request_hash or _fallback_request_hash(st),
        "decision": "deny" if denied else "allow",
        "reason": reason,
        "status": response.status_code,
        "epsilon": note.epsilon if not denied else "0",
        "result_hash": _result_hash(obj),
        "jti": st.jti,
        "client": st.client,
        **note.extra,
    }
    if note.request_id is not None:
        fields["request_id"] = note.request_id
    effect = st.admission if st.admission is not None else note.effect
    try:
        appended = rt.audit.append(_utf8_safe(fields), effect)
    except Exception:
        current_app.logger.exception("audit append failed; answer withheld")
        return _error_response(
            "unavailable",
            "the call could not be recorded in the audit log; nothing was released, retry later",
            {},
            503,
        )
    result = fields["result_hash"]
    if effect is not None and effect.refusal is not None:
        response = _refusal_response(effect)
        denied = True
    elif effect is not None and effect.replacement is not None:
        # Decided at commit: the answer the entry records (at_commit.py).
        obj = effect.replacement
        result = audit_result_hash(obj)
        response.set_data(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))
    for callback in note.after_append:
        callback(appended.index)
    response.headers["X-Audit-Index"] = str(appended.index)
    if note.receipt and not denied and isinstance(obj, dict):
        claims = receipt_claims(
            iss=rt.settings.audience,
            iat=int(rt.clock().timestamp()),
            audit_index=appended.index,
            leaf_hash=appended.leaf_hash,
            request_hash=fields["request_hash"],
            result_hash=result,
            request_id=note.request_id,
        )
        body = dict(obj)
        body["receipt"] = rt.keys.sign_receipt(claims)
        response.set_data(json.dumps(body, ensure_ascii=False, separators=(",", ":")))
    return response


def render_refusal(fields: dict[str, Any], exc: DomainError) -> tuple[dict[str, Any], str, int]:
    """The entry and the response of a call refused at commit (runs in the thread
    that commits the batch: no request context here)."""
    text = _error_text(exc.code, exc.message, exc.details)
    status = status_of(exc)
    refused = {
        **fields,
        "decision": "deny",
        "reason": f"{exc.code}: {exc.message}"[:500],
        "status": status,
        "epsilon": "0",
        "result_hash": audit_result_hash(json.loads(text)),
    }
    if isinstance(exc, AuthError):
        refused["action"] = "auth.refused"
    return _utf8_safe(refused), text, status


def _refusal_response(effect: AtCommit) -> Response:
    resp = current_app.response_class(
        effect.refusal_text, status=effect.refusal_status, mimetype="application/json"
    )
    assert effect.refusal is not None
    retry = effect.refusal.details.get("retry_after")
    if isinstance(retry, int):
        resp.headers["Retry-After"] = str(retry)
    return resp


def _utf8_safe(value: Any) -> Any:
    """``value`` with any lone surrogate or NUL replaced (U+FFFD): inputs are checked at
    the edge, this is the last guard so that one odd string can never fail an append."""
    if isinstance(value, str):
        return value if all_utf8(value) else storable(value)
    if isinstance(value, dict):
        return {_utf8_safe(k): _utf8_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_utf8_safe(v) for v in value]
    return value


def _result_hash(obj: Any) -> str | None:
    if obj is None:
        return None
    try:
        return audit_result_hash(obj)
    except AuditError:  # not JSON-canonicalisable: hash what was sent instead
        current_app.logger.exception("response is not canonical JSON")
        return None


def _fallback_request_hash(st: CallState) -> str:
    # The body could not be read (e.g. it was too large): hash what is known.
    return audit_request_hash(st.method, st.target, b"")


def _error_text(code: str, message: str, details: Mapping[str, Any]) -> str:
    return json.dumps(
        error_body(code, message, dict(details)),
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )


def _error_response(code: str, message: str, details: dict[str, Any], status: int) -> Response:
    text = _error_text(code, message, details)
    # What is hashed into the audit entry is exactly what the client parses (e.g.
    # marshmallow's integer list indices become string keys).
    g.response_obj = json.loads(text)
    return current_app.response_class(text, status=status, mimetype="application/json")


def handle_domain_error(exc: DomainError) -> Response:
    resp = _error_response(exc.code, exc.message, exc.details, status_of(exc))
    retry = exc.details.get("retry_after")
    if isinstance(retry, int):
        resp.headers["Retry-After"] = str(retry)
    return resp


def handle_audit_error(exc: AuditError) -> Response:
    return _error_response(exc.code, exc.message, {}, STATUS_BY_CODE.get(exc.code, 400))


def handle_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = CODE_BY_HTTP_STATUS.get(status, "invalid_request" if status < 500 else "internal")
    details: dict[str, Any] = {}
    data = getattr(exc, "data", None)  # flask-smorest/webargs validation messages
    if isinstance(data, dict) and "messages" in data:
        details["fields"] = data["messages"]
        message = "the request does not match the schema"
    else:
        message = exc.description or exc.name
    # The status of the §5 code, not Werkzeug's (e.g. its 415 leaves as 400).
    resp = _error_response(
        code, message, details, STATUS_BY_CODE.get(code, 400) if status < 500 else 500
    )
    if status == 405 and isinstance(exc, HTTPException):
        allow = exc.get_headers()
        for k, v in allow:
            if k.lower() == "allow":
                resp.headers["Allow"] = v
    return resp


def handle_unexpected(exc: Exception) -> Response:
    current_app.logger.exception("unhandled error")
    return _error_response("internal", "internal error; the call was recorded", {}, 500)


def install(app: Flask) -> None:
    """Register the hooks and error handlers on ``app``."""
    app.before_request(before_request)
    app.after_request(after_request)
    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(AuditError, handle_audit_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)


def json_body() -> dict[str, Any]:
    """Return the request's JSON object body.

    Raises ``InvalidRequest`` for a wrong content type, malformed JSON or a non-object.
    """
    st = state()
    mimetype = request.mimetype
    if mimetype != "application/json":
        from sandbox.errors import UnsupportedMediaType

        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {mimetype or 'missing'!r}"
        )
    try:
        data = json.loads(st.body.decode("utf-8"))
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

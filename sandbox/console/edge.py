"""The console's edge: sessions, CSRF, the role table, and committing every call.

Like the API's edge (``sandbox/api/calls.py``), but authenticated by a session that a
signed challenge opened (``policies/sessions.py``, DESIGN §12) instead of a signature
per call:

1. ``before`` reads the body (at most ``MAX_BODY``), hashes the request as DESIGN §7
   does, finds the session of the HttpOnly cookie, builds the
   :class:`~sandbox.actions.call.Caller` of its principal (``Caller.console``),
   checks the role table and, for every POST, the CSRF token;
2. a view calls one action and hands its ``Pending`` to :func:`show` (a page) or
   :func:`commit_call` (a form), which commit it with its audit entry;
3. a refusal raised before the view committed is committed by :func:`refuse`, so a
   console request that reaches protected data or changes state leaves exactly one
   entry. A GET without a live session is redirected to the sign-in page and leaves
   none (it reached nothing); a POST without one is recorded as a refused call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from audit.entry import request_hash
from audit.errors import AuditError
from policies.errors import AuthError, TokenExpired, Unauthenticated
from policies.principals import Principal, Role
from policies.sessions import ConsoleSession, csrf_ok, csrf_token
from products.errors import DomainError, Forbidden, InvalidRequest, NotFound, TooLarge
from products.text import all_utf8
from sandbox.actions.call import Caller, Outcome, Pending, commit
from sandbox.console import i18n
from sandbox.console.texts import error_title, label
from sandbox.errors import Internal, Unavailable, error_body, from_audit, status_of
from sandbox.runtime import Runtime
from sandbox.wsgi import request_target

_log = logging.getLogger(__name__)

blp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

SESSION_COOKIE = "pds_console"
PRE_COOKIE = "pds_presign"  # binds the sign-in form's CSRF token before any session
MAX_BODY = 256 * 1024
REGULATOR = frozenset({Role.REGULATOR})
OPERATOR = frozenset({Role.OPERATOR})
ENTERPRISE = frozenset({Role.ENTERPRISE})
SUPERVISION = REGULATOR | OPERATOR
ANYONE = frozenset(Role)

# Endpoints that need no session: the sign-in pages, the challenge, static files.
PUBLIC = frozenset(
    {
        "console.sign_in_page",
        "console.sign_in",
        "console.challenge",
        "console.static",
        "console.unknown",
    }
)
# endpoint → (roles that may call it, the audit action of its refusals). Views commit
# their own action when allowed; an endpoint missing here is refused (an empty
# allow-list allows nothing).
ENDPOINTS: dict[str, tuple[frozenset[Role], str]] = {
    "console.home": (ANYONE, "console.view"),
    "console.sign_out": (ANYONE, "console.sign_out"),
    "console.trail": (ANYONE, "audit.read"),  # others than regulators: their own
    "console.entry": (ANYONE, "audit.proof"),
    "console.receipt": (ANYONE, "receipt.read"),
    "console.integrity": (REGULATOR, "audit.checkpoint"),
    "console.budgets": (ANYONE, "scope.charges"),  # enterprises: their own
    "console.oversight": (REGULATOR, "audit.read"),
    "console.models": (SUPERVISION, "model_product.list"),
    "console.model_version": (SUPERVISION, "model_product.read"),
    "console.model_file": (REGULATOR, "model_product.file"),  # as the API's role table
    "console.model_withdraw": (SUPERVISION, "model_product.withdraw"),
    "console.report": (SUPERVISION, "report.read"),
    "console.usage": (ANYONE, "audit.read"),
    "console.products": (SUPERVISION, "product.list"),
    "console.principals": (SUPERVISION, "principal.list"),
    "console.scopes": (ANYONE, "scope.list"),
    "console.scope": (ANYONE, "scope.read"),
    "console.grant_form": (OPERATOR, "scope.grant"),
    "console.grant": (OPERATOR, "scope.grant"),
    "console.transition": (OPERATOR, "scope.transition"),
    "console.query_page": (ENTERPRISE, "query.preview"),
    "console.query": (ENTERPRISE, "query.aggregate"),
    "console.synthetic_page": (ENTERPRISE, "synthetic.preview"),
    "console.synthetic": (ENTERPRISE, "synthetic"),
}

# Navigation per role: (endpoint, label key).
NAV: dict[Role, tuple[tuple[str, str], ...]] = {
    Role.REGULATOR: (
        ("console.trail", "nav.trail"),
        ("console.integrity", "nav.integrity"),
        ("console.budgets", "nav.budgets"),
        ("console.oversight", "nav.oversight"),
        ("console.models", "nav.models"),
        ("console.report", "nav.report"),
    ),
    Role.OPERATOR: (
        ("console.scopes", "nav.scopes"),
        ("console.products", "nav.products"),
        ("console.principals", "nav.principals"),
        ("console.usage", "nav.usage"),
        ("console.budgets", "nav.budgets"),
        ("console.models", "nav.models"),
        ("console.report", "nav.report"),
    ),
    Role.ENTERPRISE: (
        ("console.scopes", "nav.my_scopes"),
        ("console.query_page", "nav.query"),
        ("console.synthetic_page", "nav.synthetic"),
        ("console.trail", "nav.calls"),
        ("console.budgets", "nav.budget_history"),
        ("console.usage", "nav.usage"),
    ),
}


@dataclass
class Visit:
    """One console request: what the audit entry needs, and who is signed in."""

    method: str
    target: str
    client: str
    request_hash: str
    caller: Caller
    session: ConsoleSession | None = None
    principal: Principal | None = None
    outcome: Outcome | None = None


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["sandbox.runtime"]
    return rt


def visit() -> Visit:
    v: Visit = g.console
    return v


def me() -> Principal:
    """The signed-in principal (views run only once the session checked out)."""
    p = visit().principal
    assert p is not None, "a console view reached without a session"
    return p


def number(value: Any) -> Any:
    """A released float shown to a sensible precision (the ± beside it says how much
    of it is noise); anything else as it is."""
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.4g}"
    return value


@blp.context_processor
def _labels() -> dict[str, Any]:
    return {"label": label, "nav_label": label, "number": number}


@blp.before_request
def before() -> Response | None:
    rt = runtime()
    request.max_content_length = MAX_BODY
    # The path and query as sent, hashed in the deployment's suite: as the API's edge.
    target = request_target(request.environ)
    client = request.remote_addr or ""
    digest = rt.suite.digest
    rh = request_hash(request.method, target, b"", digest=digest)  # until the body is read
    g.console = v = Visit(request.method, target, client, rh, Caller.anonymous(rh, client, None))
    if request.method == "POST":
        body = request.get_data(cache=True)
        v.request_hash = rh = request_hash(request.method, target, body, digest=digest)
        v.caller = Caller.anonymous(rh, client, None)
    if request.endpoint in PUBLIC:
        return None
    token = request.cookies.get(SESSION_COOKIE)
    session = rt.sessions.find(token) if token else None
    now = rt.clock()
    principal = rt.principals.find(session.principal) if session is not None else None
    if session is None or principal is None or not principal.active or not session.live(now):
        expired = session is not None and session.ended_at is None and now >= session.expires_at
        if request.method == "GET":
            reason = "expired" if expired else "signed_out"
            return redirect(  # type: ignore[return-value]
                url_for("console.sign_in_page", next=target, reason=reason)
            )
        if expired:
            raise TokenExpired("the console session has expired; sign in again", "expired")
        raise Unauthenticated("no console session; sign in first", "no_session")
    v.session, v.principal = session, principal
    v.caller = Caller.console(principal, session=session.public_id, request_hash=rh, client=client)
    roles = ENDPOINTS.get(request.endpoint or "", (frozenset(), ""))[0]
    if principal.role not in roles:
        raise Forbidden(
            f"role {principal.role.value!r} may not open this page", {"role": principal.role.value}
        )
    # Path and query values reach the stores as parameters, as on the API (a NUL would
    # fail PostgreSQL).
    if not all_utf8(request.view_args or {}) or not all_utf8(dict(request.args.lists())):
        raise InvalidRequest(
            "the path or query holds a lone surrogate or a NUL; it must be Unicode text"
        )
    if request.method == "POST":
        if not csrf_ok(rt.console_secret, session.id, request.form.get("csrf_token")):
            # Not the signed-in page's form: a forgery is not the principal's call.
            v.caller = Caller.anonymous(rh, client, principal.id)
            raise Forbidden("the form's CSRF token is missing or invalid; reload the page")
        if not all_utf8(dict(request.form.lists())):
            raise InvalidRequest("the form holds a lone surrogate or a NUL")
    return None


@blp.after_request
def after(response: Response) -> Response:
    h = response.headers
    h.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    )
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")  # sign-in links carry a token
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Cache-Control", "no-store")
    v: Visit | None = g.get("console")
    if v is not None and v.outcome is not None:
        h["X-Audit-Index"] = str(v.outcome.index)
    asked = request.args.get("lang")
    if asked in i18n.LOCALES:
        response.set_cookie(
            i18n.LANG_COOKIE, asked, max_age=365 * 86400, samesite="Strict", path="/console"
        )
    return response


def commit_call(pending: Pending) -> Outcome:
    """Commit ``pending`` as this request's call (once)."""
    v = visit()
    if v.outcome is not None:
        raise RuntimeError("a console request commits once")  # a defect: never two entries
    v.outcome = commit(runtime(), v.caller, pending)
    return v.outcome


def csrf() -> str:
    """The CSRF token of this session's forms."""
    v = visit()
    assert v.session is not None
    return csrf_token(runtime().console_secret, v.session.id)


def page(template: str, status: int = 200, **context: Any) -> Response:
    """Render ``console/<template>`` with the layout's context."""
    v = visit()
    principal = v.principal
    nav = NAV.get(principal.role, ()) if principal is not None else ()
    html = render_template(
        f"console/{template}",
        me=principal,
        session=v.session,
        nav=nav,
        csrf_token=csrf() if v.session is not None else None,
        locale=i18n.current(),
        here=request.endpoint,
        audit_index=v.outcome.index if v.outcome is not None else None,
        **i18n.jinja_globals(),
        **context,
    )
    return make_response(html, status)


def show(pending: Pending, template: str, **context: Any) -> Response:
    """Commit a page's read and render it from the answer (``data``)."""
    outcome = commit_call(pending)
    if outcome.error is not None:
        return error_page(outcome.error)
    return page(template, data=outcome.body, **context)


def error_page(error: DomainError) -> Response:
    status = status_of(error)
    return page(
        "error.html",
        status=status,
        code=error.code,
        title=error_title(error.code),
        message=error.message,
        body=error_body(error),
    )


def refuse(error: DomainError) -> Response:
    """Commit a request refused before its view committed, and render the refusal."""
    v: Visit | None = g.get("console")
    if v is None:
        return make_response(_("Internal error"), 500)
    if v.outcome is None:
        action = ENDPOINTS.get(request.endpoint or "", (frozenset(), "console.view"))[1]
        if request.endpoint in ("console.sign_in",):
            action = "console.sign_in"
        try:
            commit_call(Pending(action, refusal=error))
        except (AuditError, SQLAlchemyError, OSError):
            _log.exception("a console call could not be recorded; nothing was released")
            error = Unavailable("the call could not be recorded in the audit log; retry later")
    return error_page(error)


@blp.errorhandler(DomainError)
def _domain_error(exc: DomainError) -> Response:
    return refuse(exc)


@blp.errorhandler(AuditError)
def _audit_error(exc: AuditError) -> Response:
    return refuse(from_audit(exc))


@blp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status == 404:
        return refuse(NotFound(exc.description or "not found"))
    if status == 413:
        return refuse(TooLarge(f"the form is larger than {MAX_BODY} bytes"))
    if status >= 500:
        return refuse(Internal(exc.description or exc.name))
    return refuse(InvalidRequest(exc.description or exc.name))


@blp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    if isinstance(exc, SQLAlchemyError | OSError):
        _log.warning("store or disk failure: %s", exc)
        return refuse(Unavailable("a store or disk of the platform failed; retry later"))
    _log.exception("unhandled console error")
    return refuse(Internal("internal error; the call was recorded"))


def is_auth_error(error: DomainError) -> bool:
    return isinstance(error, AuthError)


View = Callable[..., Response]

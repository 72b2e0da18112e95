"""Sign-in without a private key in the browser (DESIGN §12), sign-out, home.

``sandbox console login --url URL --id ID --key PEM`` asks ``GET /console/challenge``
for a one-time challenge, signs it with the principal's key as a DESIGN §6 signed
call over ``POST /console/sign-in`` whose body is the challenge, and prints a link
``/console/sign-in?challenge=…&token=…``. Opening it shows who would be signed in and
a button; the sign-in happens on that POST (a link preview or prefetch consumes
nothing, and another site cannot sign a browser in: the form needs the CSRF token
bound to this browser's pre-session cookie). The page also takes a token pasted from
``sandbox console sign``. The signed call is checked by ``policies.calls.verify_call``
(algorithm, kid, typ, audience, lifetime ≤ 300 s, body hash), its ``jti`` is claimed
as every call's nonce, and the challenge's nonce is claimed in the sign-in's own
transaction: each opens at most one session.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any

from flask import Response, jsonify, redirect, request, url_for

from policies.calls import verify_call
from policies.errors import AuthError
from policies.sessions import (
    CHALLENGE_PATH,
    csrf_ok,
    csrf_token,
    issue_challenge,
    new_session_token,
    open_challenge,
)
from products.errors import Forbidden, InvalidRequest, NotFound
from sandbox.actions import console as actions
from sandbox.actions.call import Caller
from sandbox.console.edge import (
    PRE_COOKIE,
    SESSION_COOKIE,
    blp,
    commit_call,
    error_page,
    me,
    page,
    runtime,
    visit,
)

HOME = {"regulator": "console.trail", "operator": "console.scopes", "enterprise": "console.scopes"}


def _safe_next(target: str | None) -> str:
    """Only a console path (no other site, no scheme-relative URL)."""
    if target and target.startswith("/console/") and not target.startswith("//"):
        return target
    return url_for("console.home")


def _claimed_issuer(token: str) -> str | None:
    """The ``iss`` a token names, unverified: only shown as "sign in as …?"."""
    try:
        part = token.split(".")[1]
        claims: Any = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError, UnicodeError):
        return None
    iss = claims.get("iss") if isinstance(claims, dict) else None
    return iss if isinstance(iss, str) and len(iss) <= 128 else None


@blp.route("/challenge", methods=["GET"])
def challenge() -> Response:
    """A one-time sign-in challenge (unaudited: it writes nothing and reveals nothing)."""
    rt = runtime()
    text = issue_challenge(rt.console_secret, rt.clock(), rt.settings.console_challenge_s)
    return jsonify(
        {"challenge": text, "expires_in": rt.settings.console_challenge_s, "path": CHALLENGE_PATH}
    )


@blp.route("/sign-in", methods=["GET"])
def sign_in_page() -> Response:
    rt = runtime()
    pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
    token = request.args.get("token", "")
    fresh = issue_challenge(rt.console_secret, rt.clock(), rt.settings.console_challenge_s)
    resp = page(
        "sign_in.html",
        pre_csrf=csrf_token(rt.console_secret, "pre:" + pre),
        token=token,
        challenge=request.args.get("challenge", ""),
        claimed=_claimed_issuer(token) if token else None,
        fresh_challenge=fresh,
        next=_safe_next(request.args.get("next")),
        reason=request.args.get("reason"),
        base_url=request.host_url.rstrip("/"),
    )
    resp.set_cookie(
        PRE_COOKIE, pre, httponly=True, samesite="Strict", secure=request.is_secure, path="/console"
    )
    return resp


@blp.route("/sign-in", methods=["POST"])
def sign_in() -> Response:
    rt = runtime()
    v = visit()
    pre = request.cookies.get(PRE_COOKIE, "")
    if not pre or not csrf_ok(rt.console_secret, "pre:" + pre, request.form.get("csrf_token")):
        raise Forbidden("the sign-in form's CSRF token is missing or invalid; reload the page")
    token = request.form.get("token", "").strip()
    text = request.form.get("challenge", "").strip()
    if not token or not text or len(token) > 8192 or len(text) > 512:
        raise InvalidRequest(
            "a challenge and the token signed over it are required",
            {"fields": {"token": ["required"], "challenge": ["required"]}},
        )
    now = rt.clock()
    try:
        challenge_ = open_challenge(rt.console_secret, text, now)
        call = verify_call(
            f"Bearer {token}",
            method="POST",
            path_and_query=CHALLENGE_PATH,
            body_sha256=hashlib.sha256(text.encode()).digest(),
            policy=rt.call_policy,
            principals=rt.principals.find,
            now=now,
        )
    except AuthError as exc:
        v.caller = Caller.anonymous(v.request_hash, v.client, exc.issuer or _claimed_issuer(token))
        raise
    v.caller = Caller.signed(
        call.principal,
        jti=call.jti,
        nonce_expires_at=call.replay_window_ends,
        request_hash=v.request_hash,
        client=v.client,
    )
    secret = new_session_token()
    outcome = commit_call(actions.sign_in(rt, call.principal, challenge_, secret))
    if outcome.error is not None:
        return error_page(outcome.error)
    resp = redirect(_safe_next(request.form.get("next")), code=303)
    resp.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=rt.settings.console_session_s,
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
        path="/console",
    )
    resp.delete_cookie(PRE_COOKIE, path="/console")
    return resp  # type: ignore[return-value]


@blp.route("/sign-out", methods=["POST"])
def sign_out() -> Response:
    v = visit()
    assert v.session is not None
    outcome = commit_call(actions.sign_out(runtime(), v.session))
    if outcome.error is not None:
        return error_page(outcome.error)
    resp = redirect(url_for("console.sign_in_page", reason="signed_out"), code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/console")
    return resp  # type: ignore[return-value]


@blp.route("/", methods=["GET"])
def home() -> Response:
    """The signed-in principal's main page (a redirect: nothing is read here)."""
    return redirect(url_for(HOME[me().role.value]))  # type: ignore[return-value]


@blp.route("/<path:rest>", methods=["GET", "POST"])
def unknown(rest: str) -> Response:
    """Any other console path: 404, unaudited (it reaches nothing; no session needed
    to learn that a page does not exist)."""
    return error_page(NotFound(f"no console page /console/{rest}"))

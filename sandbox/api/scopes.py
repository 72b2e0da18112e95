"""Authorisation scopes: grant, read (enterprises: their own), suspend, resume, revoke."""

from __future__ import annotations

from flask import Response
from flask_smorest import Blueprint

from policies.scopes import ScopeStatus
from products.errors import InvalidRequest
from sandbox.actions import scopes
from sandbox.api.calls import caller, json_body, respond, runtime
from sandbox.api.schemas import ref_body, ref_response

blp = Blueprint("scopes", __name__, url_prefix="/v1/scopes", description="Authorisation scopes")


@blp.route("", methods=["POST"])
@blp.doc(
    summary="Grant a scope (operator)",
    requestBody=ref_body("ScopeRequest"),
    responses={"201": ref_response("Scope")},
)
def create() -> Response:
    return respond(scopes.grant(runtime(), json_body(), caller().id))


@blp.route("", methods=["GET"])
@blp.doc(summary="Scopes with their budgets (enterprises: their own)")
def list() -> Response:
    return respond(scopes.listing(runtime(), caller()))


@blp.route("/<scope_id>", methods=["GET"])
@blp.doc(
    summary="One scope with its budget spent and remaining",
    responses={"200": ref_response("Scope")},
)
def show(scope_id: str) -> Response:
    return respond(scopes.read(runtime(), caller(), scope_id))


def _reason() -> str | None:
    from flask import request

    if not request.get_data(cache=True):
        return None
    reason = json_body().get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 1000):
        raise InvalidRequest(
            "reason must be text (≤ 1000 characters)", {"fields": {"reason": ["not text"]}}
        )
    return reason


def _transition(scope_id: str, status: ScopeStatus) -> Response:
    return respond(scopes.transition(runtime(), scope_id, status, _reason()))


@blp.route("/<scope_id>/revoke", methods=["POST"])
@blp.doc(summary="Revoke a scope: final (operator)")
def revoke(scope_id: str) -> Response:
    return _transition(scope_id, ScopeStatus.REVOKED)


@blp.route("/<scope_id>/suspend", methods=["POST"])
@blp.doc(summary="Suspend a scope: reversible (operator)")
def suspend(scope_id: str) -> Response:
    return _transition(scope_id, ScopeStatus.SUSPENDED)


@blp.route("/<scope_id>/resume", methods=["POST"])
@blp.doc(summary="Resume a suspended scope (operator)")
def resume(scope_id: str) -> Response:
    return _transition(scope_id, ScopeStatus.ACTIVE)


@blp.route("/<scope_id>/charges", methods=["GET"])
@blp.doc(summary="The scope's budget ledger: every charge with its audit index")
def charges(scope_id: str) -> Response:
    return respond(scopes.charges(runtime(), scope_id))

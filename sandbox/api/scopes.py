"""Authorisation scopes: grant, read (enterprises: their own), suspend, resume, revoke."""

from __future__ import annotations

from typing import Any

from flask import Response
from marshmallow import RAISE, Schema, fields, validate

from policies.scopes import GrantSchema, ScopeGrant, ScopeStatus
from sandbox.actions import scopes
from sandbox.api.blueprint import Blueprint
from sandbox.api.calls import caller, respond, runtime
from sandbox.api.schemas import ChargesAnswer, ScopeAnswer, ScopeList

blp = Blueprint("scopes", __name__, url_prefix="/v1/scopes", description="Authorisation scopes")


class TransitionSchema(Schema):
    """The optional body of a suspension, resumption or revocation."""

    class Meta:
        unknown = RAISE

    reason = fields.String(validate=validate.Length(max=1000))


@blp.route("", methods=["POST"])
@blp.arguments(GrantSchema)
@blp.response(201, ScopeAnswer)
@blp.doc(summary="Grant a scope (operator)")
def create(grant: ScopeGrant) -> Response:
    return respond(scopes.grant(runtime(), grant, caller().id))


@blp.route("", methods=["GET"])
@blp.response(200, ScopeList)
@blp.doc(summary="Scopes with their budgets (enterprises: their own)")
def list() -> Response:
    return respond(scopes.listing(runtime(), caller()))


@blp.route("/<scope_id>", methods=["GET"])
@blp.response(200, ScopeAnswer)
@blp.doc(summary="One scope with its budget spent and remaining")
def show(scope_id: str) -> Response:
    return respond(scopes.read(runtime(), caller(), scope_id))


def _transition(scope_id: str, status: ScopeStatus, body: dict[str, Any]) -> Response:
    return respond(scopes.transition(runtime(), scope_id, status, body.get("reason")))


@blp.route("/<scope_id>/revoke", methods=["POST"])
@blp.arguments(TransitionSchema)
@blp.response(200, ScopeAnswer)
@blp.doc(summary="Revoke a scope: final (operator)")
def revoke(body: dict[str, Any], scope_id: str) -> Response:
    return _transition(scope_id, ScopeStatus.REVOKED, body)


@blp.route("/<scope_id>/suspend", methods=["POST"])
@blp.arguments(TransitionSchema)
@blp.response(200, ScopeAnswer)
@blp.doc(summary="Suspend a scope: reversible (operator)")
def suspend(body: dict[str, Any], scope_id: str) -> Response:
    return _transition(scope_id, ScopeStatus.SUSPENDED, body)


@blp.route("/<scope_id>/resume", methods=["POST"])
@blp.arguments(TransitionSchema)
@blp.response(200, ScopeAnswer)
@blp.doc(summary="Resume a suspended scope (operator)")
def resume(body: dict[str, Any], scope_id: str) -> Response:
    return _transition(scope_id, ScopeStatus.ACTIVE, body)


@blp.route("/<scope_id>/charges", methods=["GET"])
@blp.response(200, ChargesAnswer)
@blp.doc(summary="The scope's budget ledger: every charge with its audit index")
def charges(scope_id: str) -> Response:
    return respond(scopes.charges(runtime(), scope_id))

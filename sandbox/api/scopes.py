"""Authorisation scopes: grant, read (enterprises: their own), suspend, resume, revoke."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from policies.principals import Role
from policies.scopes import Scope, ScopeStatus, parse_grant
from products.errors import InvalidRequest, NotFound
from sandbox.actions.scopes import grant as grant_scope
from sandbox.actions.scopes import transition
from sandbox.api.context import caller, note, state
from sandbox.api.lifecycle import json_body, render_refusal, runtime
from sandbox.api.schemas import ref_body, ref_response

blp = Blueprint("scopes", __name__, url_prefix="/v1/scopes", description="Authorisation scopes")


def _product_of(product_id: str) -> Any:
    try:
        return runtime().catalogue.get(product_id).manifest
    except NotFound:
        return None


def _is_enterprise(pid: str) -> bool:
    p = runtime().principals.find(pid)
    return p is not None and p.role is Role.ENTERPRISE


def visible_scope(scope_id: str) -> Scope:
    """Return the scope if the caller may see it; enterprises see only their own.

    Raises ``NotFound`` (also for another enterprise's scope, so ids do not leak).
    """
    scope = runtime().scopes.get(scope_id)
    me = caller()
    if me.role is Role.ENTERPRISE and scope.enterprise != me.id:
        raise NotFound(f"no scope {scope_id!r}", {"scope": scope_id})
    return scope


@blp.route("", methods=["POST"])
@blp.doc(
    summary="Grant a scope (operator)",
    requestBody=ref_body("ScopeRequest"),
    responses={"201": ref_response("Scope")},
)
def create() -> tuple[dict[str, Any], int]:
    data = json_body()
    n = note(product=data.get("product") if isinstance(data.get("product"), str) else None)
    rt = runtime()
    grant = parse_grant(
        data,
        product_of=_product_of,
        enterprise_exists=_is_enterprise,
        verification_product_of=rt.catalogue.verification_product_owner,
    )
    n.target["scope"] = grant.id
    n.target["enterprise"] = grant.enterprise
    return grant_scope(rt, grant, caller().id, n, render_refusal), 201


@blp.route("", methods=["GET"])
@blp.doc(summary="Scopes with their budgets (enterprises: their own)")
def list() -> dict[str, Any]:
    note()
    me = caller()
    only = me.id if me.role is Role.ENTERPRISE else None
    return {"scopes": [s.to_dict() for s in runtime().scopes.list(enterprise=only)]}


@blp.route("/<scope_id>", methods=["GET"])
@blp.doc(
    summary="One scope with its budget spent and remaining",
    responses={"200": ref_response("Scope")},
)
def show(scope_id: str) -> dict[str, Any]:
    note(scope=scope_id)
    return visible_scope(scope_id).to_dict()


def _reason() -> str | None:
    if not state().body:
        return None
    data = json_body()
    reason = data.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 1000):
        raise InvalidRequest(
            "reason must be text (≤ 1000 characters)", {"fields": {"reason": ["not text"]}}
        )
    return reason


def _transition(scope_id: str, status: ScopeStatus) -> dict[str, Any]:
    n = note(scope=scope_id)
    return transition(runtime(), scope_id, status, _reason(), n, render_refusal)


@blp.route("/<scope_id>/revoke", methods=["POST"])
@blp.doc(summary="Revoke a scope: final (operator)")
def revoke(scope_id: str) -> dict[str, Any]:
    return _transition(scope_id, ScopeStatus.REVOKED)


@blp.route("/<scope_id>/suspend", methods=["POST"])
@blp.doc(summary="Suspend a scope: reversible (operator)")
def suspend(scope_id: str) -> dict[str, Any]:
    return _transition(scope_id, ScopeStatus.SUSPENDED)


@blp.route("/<scope_id>/resume", methods=["POST"])
@blp.doc(summary="Resume a suspended scope (operator)")
def resume(scope_id: str) -> dict[str, Any]:
    return _transition(scope_id, ScopeStatus.ACTIVE)


@blp.route("/<scope_id>/charges", methods=["GET"])
@blp.doc(summary="The scope's budget ledger: every charge with its audit index")
def charges(scope_id: str) -> dict[str, Any]:
    note(scope=scope_id)
    rt = runtime()
    scope = rt.scopes.get(scope_id)
    return {
        "scope": scope.id,
        "budget": scope.budget.to_dict(),
        "charges": rt.ledger.charges(scope_id),
    }

"""Operator and enterprise pages: products, principals, scopes (grant, suspend, resume,
revoke), and the enterprise's query page with its preview.

Forms are parsed with the API's own schemas (``GrantSchema``, ``QueryRequestSchema``)
and committed through the API's own actions, as calls of the signed-in principal: a
form the API would refuse is refused with the same code and recorded the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Response, redirect, request, url_for
from werkzeug.datastructures import MultiDict

from policies.principals import Role
from policies.scopes import AGGREGATE_FUNCTIONS, GrantSchema, ScopeStatus
from products.errors import InvalidRequest, NotFound
from products.parsing import parse
from sandbox.actions import console as actions
from sandbox.actions import queries, scopes
from sandbox.actions.call import Pending
from sandbox.actions.queries import QueryRequestSchema
from sandbox.console.edge import blp, commit_call, error_page, me, page, runtime, show
from sandbox.console.texts import label

TRANSITIONS = {
    "suspend": ScopeStatus.SUSPENDED,
    "resume": ScopeStatus.ACTIVE,
    "revoke": ScopeStatus.REVOKED,
}


@blp.route("/products", methods=["GET"])
def products() -> Response:
    return show(actions.products(runtime()), "products.html")


@blp.route("/principals", methods=["GET"])
def principals() -> Response:
    return show(actions.principals(runtime()), "principals.html", label=label)


@blp.route("/scopes", methods=["GET"], endpoint="scopes")
def scopes_page() -> Response:
    return show(scopes.listing(runtime(), me()), "scopes.html", label=label)


@blp.route("/scopes/<scope_id>", methods=["GET"])
def scope(scope_id: str) -> Response:
    return show(
        actions.scope_detail(runtime(), me(), scope_id),
        "scope.html",
        label=label,
        can_change=me().role is Role.OPERATOR,
    )


# ----------------------------------------------------------------- granting


def _choices() -> dict[str, Any]:
    rt = runtime()
    records = rt.catalogue.products()
    return {
        "enterprises": [p.id for p in rt.principals.with_role(Role.ENTERPRISE)],
        "products": {r.id: [c.name for c in r.manifest.columns] for r in records},
        "verification_products": rt.catalogue.verification_ids(),
        "functions": AGGREGATE_FUNCTIONS,
    }


def grant_data(form: MultiDict[str, str]) -> dict[str, Any]:
    """The grant request (DESIGN §5 scope body) a grant form describes: fields left
    empty are left out, numbers that look like integers become integers, and the
    rest is left for ``GrantSchema`` to judge exactly as it judges an API body."""
    data: dict[str, Any] = {}
    for name in ("id", "enterprise", "product", "purpose"):
        value = form.get(name, "").strip() if name != "purpose" else form.get(name, "")
        if value:
            data[name] = value
    for name in ("epsilon", "delta", "max_epsilon_per_query"):
        value = form.get(name, "").strip()
        if value:
            data[name] = value
    for name in ("rate_per_minute", "daily_quota"):
        value = form.get(name, "").strip()
        if value:
            data[name] = int(value) if value.isdigit() and len(value) < 19 else value
    for name in ("valid_from", "valid_until"):
        value = form.get(name, "").strip()
        if value:
            data[name] = _rfc3339(value)
    operations: dict[str, Any] = {}
    columns = [c.strip() for c in form.getlist("columns") if c.strip()]
    if columns:
        aggregate: dict[str, Any] = {"columns": columns}
        functions = [f for f in form.getlist("functions") if f]
        if functions:
            aggregate["functions"] = functions
        operations["aggregate"] = aggregate
    verify = [v for v in form.getlist("verify") if v]
    if verify:
        operations["verify"] = verify
    data["operations"] = operations
    return data


def _rfc3339(value: str) -> str:
    """A ``datetime-local`` value (taken as UTC) as RFC 3339; anything else as given."""
    for fmt in ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            t = datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
        return t.isoformat().replace("+00:00", "Z")
    return value


def _grant_form(values: dict[str, Any], errors: dict[str, Any], status: int = 200) -> Response:
    return page(
        "grant.html",
        status=status,
        values=values,
        errors=errors,
        choices=_choices(),
    )


@blp.route("/scopes/new", methods=["GET"])
def grant_form() -> Response:
    """The grant form (no data of the log is shown: nothing to record)."""
    now = runtime().clock()
    values = {
        "epsilon": "1",
        "max_epsilon_per_query": "0.5",
        "rate_per_minute": "60",
        "daily_quota": "10000",
        "valid_from": now.strftime("%Y-%m-%dT%H:%M"),
        "valid_until": now.replace(year=now.year + 1).strftime("%Y-%m-%dT%H:%M"),
    }
    return _grant_form(values, {})


@blp.route("/scopes", methods=["POST"])
def grant() -> Response:
    rt = runtime()
    form = request.form
    data = grant_data(form)
    values: dict[str, Any] = {k: form.get(k, "") for k in form}
    values["columns"] = form.getlist("columns")
    values["functions"] = form.getlist("functions")
    values["verify"] = form.getlist("verify")
    try:
        parsed = parse(GrantSchema, data, "scope grant")
    except InvalidRequest as exc:
        outcome = commit_call(Pending("scope.grant", refusal=exc))
        return _grant_form(values, exc.details.get("fields", {}), status=outcome.status)
    outcome = commit_call(scopes.grant(rt, parsed, me().id))
    if outcome.error is not None:
        fields = outcome.error.details.get("fields")
        if isinstance(fields, dict):
            return _grant_form(values, fields, status=outcome.status)
        return error_page(outcome.error)
    body = outcome.body or {}
    return redirect(url_for("console.scope", scope_id=body["id"], done="granted"), code=303)  # type: ignore[return-value]


@blp.route("/scopes/<scope_id>/<transition>", methods=["POST"])
def transition(scope_id: str, transition: str) -> Response:
    status = TRANSITIONS.get(transition)
    if status is None:
        raise NotFound(f"no scope transition {transition!r}")
    reason = request.form.get("reason", "").strip() or None
    if reason is not None and len(reason) > 1000:
        raise InvalidRequest("reason is too long", {"fields": {"reason": ["at most 1000"]}})
    outcome = commit_call(scopes.transition(runtime(), scope_id, status, reason))
    if outcome.error is not None:
        return error_page(outcome.error)
    return redirect(url_for("console.scope", scope_id=scope_id, done=transition), code=303)  # type: ignore[return-value]


# ----------------------------------------------------------------- the query page


@blp.route("/query", methods=["GET"])
def query_page() -> Response:
    """The query form over the enterprise's own scopes (its scope list is recorded as
    ``scope.list``)."""
    return show(scopes.listing(runtime(), me()), "query.html", values={}, result=None)


@blp.route("/query", methods=["POST"])
def query() -> Response:
    """Preview (``query.preview``: the accuracy, nothing spent) or run
    (``query.aggregate``: the DP answer, budget charged)."""
    rt = runtime()
    form = request.form
    values = {k: form.get(k, "") for k in ("scope", "sql", "epsilon")}
    run = form.get("do") == "run"
    action = "query.aggregate" if run else "query.preview"
    data = {k: v for k, v in values.items() if v.strip()}
    try:
        req = parse(QueryRequestSchema, data, "query")
        pending = queries.run_query(rt, me(), req) if run else queries.preview(rt, me(), req)
    except (InvalidRequest, NotFound) as exc:
        pending = Pending(action, refusal=exc)
    outcome = commit_call(pending)
    own = [s.to_dict() for s in rt.scopes.list(enterprise=me().id)]
    return page(
        "query.html",
        status=outcome.status,
        data={"scopes": own},
        values=values,
        result=outcome.body if outcome.error is None else None,
        error=outcome.error,
        ran=run,
        outcome=outcome,
    )

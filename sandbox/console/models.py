"""Model products and sandbox model development on the console (DESIGN §11, §12).

- Regulators and operators: the model products with every version (status, definition
  hash, data product, training release, call counts), and a version's review page with
  its exact definition. Filing (regulator) and withdrawing (regulator or operator) are
  forms committed through the API's own action (``model_products.transition``), as
  calls of the signed-in principal: the same roles, refusals, codes and entries
  (``model_product.file`` / ``model_product.withdraw``) as
  ``POST /v1/model-products/{id}/versions/{v}/file|withdraw``.
- Enterprises: DP synthetic data (DESIGN §11.1) with its preview (the accuracy before
  spending), through the API's own actions (``models.synthetic_preview``,
  ``models.synthetic``) and request schema; the rows are shown and can be downloaded
  as CSV (the same request again: a reuse, no second charge).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from flask import Response, make_response, redirect, request, url_for
from werkzeug.datastructures import MultiDict

from policies.principals import Role
from products.errors import InvalidRequest, NotFound
from products.parsing import parse
from sandbox.actions import console as actions
from sandbox.actions import model_products, scopes
from sandbox.actions import models as development
from sandbox.actions.call import Pending
from sandbox.console.edge import blp, commit_call, error_page, me, page, runtime
from sandbox.console.texts import label
from sandbox.models.products import NoteSchema
from sandbox.models.requests import MAX_SYNTHETIC_ROWS, METHODS, SyntheticRequestSchema

SHOWN_ROWS = 200  # synthetic rows shown on the page; the CSV holds them all

# ----------------------------------------------------------------- model filing


@blp.route("/models", methods=["GET"])
def models() -> Response:
    """Every model product with its versions (``model_product.list``)."""
    outcome = commit_call(model_products.list_all(runtime(), me()))
    if outcome.error is not None:
        return error_page(outcome.error)
    return page("models.html", data=outcome.body, label=label)


@blp.route("/models/<mp_id>/versions/<version>", methods=["GET"])
def model_version(mp_id: str, version: str) -> Response:
    """One version for review (``model_product.read``), with the File and Withdraw
    forms its status and the principal's role allow."""
    outcome = commit_call(actions.model_version(runtime(), mp_id, version))
    if outcome.error is not None:
        return error_page(outcome.error)
    body = outcome.body or {}
    chosen = body["version"]
    pretty = json.dumps(chosen["definition"], ensure_ascii=False, indent=2, sort_keys=True)
    role = me().role
    return page(
        "model_version.html",
        data=body,
        v=chosen,
        pretty=pretty,
        can_file=role is Role.REGULATOR and chosen["status"] == "draft",
        can_withdraw=role in (Role.REGULATOR, Role.OPERATOR)
        and chosen["status"] in ("draft", "filed"),
        label=label,
    )


def _transition(mp_id: str, version: str, event: str) -> Response:
    raw = request.form.get("note", "")
    note = parse(NoteSchema, {"note": raw.strip()} if raw.strip() else {}, "filing note")
    outcome = commit_call(
        model_products.transition(runtime(), me(), mp_id, version, event, note.get("note"))
    )
    if outcome.error is not None:
        return error_page(outcome.error)
    target = url_for("console.model_version", mp_id=mp_id, version=version, done=event)
    return redirect(target, code=303)  # type: ignore[return-value]


@blp.route("/models/<mp_id>/versions/<version>/file", methods=["POST"])
def model_file(mp_id: str, version: str) -> Response:
    """``model_product.file`` (regulator): a draft version is filed (算法备案)."""
    return _transition(mp_id, version, "file")


@blp.route("/models/<mp_id>/versions/<version>/withdraw", methods=["POST"])
def model_withdraw(mp_id: str, version: str) -> Response:
    """``model_product.withdraw`` (regulator or operator): final."""
    return _transition(mp_id, version, "withdraw")


# ----------------------------------------------------------------- synthetic data


def synthetic_data(form: MultiDict[str, str]) -> dict[str, Any]:
    """The synthetic-data request (DESIGN §11.1 body) a form describes: fields left
    empty are left out, a row count of ASCII digits becomes an integer, and the rest is
    left for ``SyntheticRequestSchema`` to judge exactly as it judges an API body."""
    data: dict[str, Any] = {}
    for name in ("scope", "epsilon", "method"):
        value = form.get(name, "").strip()
        if value:
            data[name] = value
    rows = form.get("rows", "").strip()
    if rows:
        data["rows"] = int(rows) if rows.isascii() and rows.isdigit() and len(rows) < 10 else rows
    columns = [c.strip() for c in form.getlist("columns") if c.strip()]
    if columns:
        data["columns"] = columns
    return data


def _developing(all_scopes: list[dict[str, Any]], chosen: str | None) -> dict[str, Any]:
    """The scopes that grant synthetic data, and the one the form is for."""
    granted = [s for s in all_scopes if s["operations"].get("synthetic")]
    current = next((s for s in granted if s["id"] == chosen), granted[0] if granted else None)
    return {"dev_scopes": granted, "current": current}


def _synthetic_page(
    all_scopes: list[dict[str, Any]],
    values: dict[str, Any],
    status: int = 200,
    **context: Any,
) -> Response:
    return page(
        "synthetic.html",
        status=status,
        values=values,
        methods=METHODS,
        max_rows=MAX_SYNTHETIC_ROWS,
        shown_rows=SHOWN_ROWS,
        label=label,
        **_developing(all_scopes, values.get("scope")),
        **context,
    )


@blp.route("/synthetic", methods=["GET"])
def synthetic_page() -> Response:
    """The synthetic-data form over the enterprise's own scopes that grant it (its
    scope list is recorded as ``scope.list``)."""
    outcome = commit_call(scopes.listing(runtime(), me()))
    if outcome.error is not None:
        return error_page(outcome.error)
    values = {
        "scope": request.args.get("scope", ""),
        "epsilon": "0.5",
        "rows": "1000",
        "method": "mst",
        "columns": [],
    }
    return _synthetic_page((outcome.body or {})["scopes"], values, result=None)


@blp.route("/synthetic", methods=["POST"])
def synthetic() -> Response:
    """Preview (``synthetic.preview``: the accuracy, nothing spent), generate
    (``synthetic``: rows drawn from a model of noisy marginals, budget charged) or
    download the same release as CSV (``synthetic`` from the stored release only: no
    fit, no charge; ``conflict`` when it is gone)."""
    rt = runtime()
    form = request.form
    values: dict[str, Any] = {k: form.get(k, "") for k in ("scope", "epsilon", "rows", "method")}
    values["columns"] = form.getlist("columns")
    do = form.get("do", "preview")
    run = do in ("run", "csv")
    try:
        req = parse(SyntheticRequestSchema, synthetic_data(form), "synthetic data request")
        # The product is the scope's own; a scope that is not the caller's is refused
        # ``not_found`` by the action before the product matters.
        scope = next((s for s in rt.scopes.list(enterprise=me().id) if s.id == req.scope), None)
        product = scope.product if scope is not None else ""
        pending = (
            # The CSV is the release just shown: served from storage, never fitted and
            # charged again.
            development.synthetic(rt, me(), product, req, stored_only=do == "csv")
            if run
            else development.synthetic_preview(rt, me(), product, req)
        )
    except (InvalidRequest, NotFound) as exc:
        pending = Pending("synthetic" if run else "synthetic.preview", refusal=exc)
    outcome = commit_call(pending)
    if do == "csv" and outcome.error is None and outcome.body is not None:
        return _csv(outcome.body)
    # The scopes as they are after this call (a release charges its scope).
    own = [s.to_dict() for s in rt.scopes.list(enterprise=me().id)]
    error = outcome.error
    fields = error.details.get("fields") if error is not None else None
    return _synthetic_page(
        own,
        values,
        status=outcome.status,
        result=outcome.body if error is None else None,
        error=error,
        errors=fields if isinstance(fields, dict) else {},
        ran=run,
        outcome=outcome,
    )


def _csv(body: dict[str, Any]) -> Response:
    """The released rows as a CSV download (the entry's ``result_hash`` is that of the
    JSON answer they were written from, as for the API's ``Accept: text/csv``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(body.get("columns", []))
    writer.writerows(["" if v is None else v for v in row] for row in body.get("rows", []))
    resp = make_response(out.getvalue())
    resp.mimetype = "text/csv"
    release = str(body.get("release", "release"))[:16]
    resp.headers["Content-Disposition"] = f'attachment; filename="synthetic-{release}.csv"'
    return resp

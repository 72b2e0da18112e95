"""Pages over the audit log: the trail, an entry with its proof, integrity, budgets,
refusals and flags, usage, receipts and the disclosure report."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Response, make_response, request

from audit.receipts import receipt_claims
from policies.principals import Role
from products.errors import InvalidRequest, NotFound
from sandbox import disclosure
from sandbox.actions import console as actions
from sandbox.actions.call import Pending
from sandbox.console import charts
from sandbox.console.edge import blp, commit_call, error_page, me, page, runtime, show
from sandbox.console.texts import label

ROLES = ("regulator", "operator", "enterprise", "platform", "unauthenticated")
DECISIONS = ("allow", "deny")

# Entry indexes a page names: JSON-safe integers (an entry records the index it showed);
# beyond them, as beyond the log, there is no such entry.
MAX_INDEX = 2**53 - 1


def _no_entry(action: str, index: int) -> Response | None:
    """The refusal page of an index no log can reach (recorded without the index)."""
    if index <= MAX_INDEX:
        return None
    outcome = commit_call(Pending(action, refusal=NotFound("no such audit entry", {})))
    assert outcome.error is not None
    return error_page(outcome.error)


def _time_arg(name: str, *, end: bool = False) -> datetime | None:
    """A date (``YYYY-MM-DD``, a whole day) or a ``datetime-local`` value, in UTC."""
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            t = datetime.strptime(raw, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
        if not 1970 <= t.year <= 9998:  # as the API's time filters; and no overflow
            raise InvalidRequest(
                f"{name} must lie between 1970 and 9998",
                {"fields": {name: ["a year from 1970 to 9998"]}},
            )
        return t + timedelta(days=1) if end and fmt == "%Y-%m-%d" else t
    raise InvalidRequest(
        f"{name} must be a date (YYYY-MM-DD) or date and time",
        {"fields": {name: ["YYYY-MM-DD or YYYY-MM-DDTHH:MM"]}},
    )


def _text_arg(name: str, limit: int = 200) -> str | None:
    raw = request.args.get(name, "").strip()
    if len(raw) > limit:
        raise InvalidRequest(f"{name} is too long", {"fields": {name: [f"at most {limit}"]}})
    return raw or None


def _int_arg(name: str) -> int | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise InvalidRequest(f"{name} must be an index", {"fields": {name: ["an integer ≥ 0"]}})
    return int(raw)


def _choice(name: str, allowed: tuple[str, ...]) -> str | None:
    raw = _text_arg(name)
    if raw is not None and raw not in allowed:
        raise InvalidRequest(f"{name} must be one of {', '.join(allowed)}", {"fields": {name: []}})
    return raw


@blp.route("/audit", methods=["GET"])
def trail() -> Response:
    filters = actions.TrailFilters(
        start_time=_time_arg("from"),
        end_time=_time_arg("to", end=True),
        actor=_text_arg("actor"),
        role=_choice("role", ROLES),
        action=_text_arg("action"),
        decision=_choice("decision", DECISIONS),
        product=_text_arg("product"),
        scope=_text_arg("scope"),
        text=_text_arg("text"),
    )
    args = {k: v for k, v in request.args.items() if k not in ("cursor", "lang") and v}
    return show(
        actions.trail(runtime(), me(), filters, _int_arg("cursor")),
        "trail.html",
        args=args,
        roles=ROLES,
        decisions=DECISIONS,
        label=label,
    )


@blp.route("/audit/<int:index>", methods=["GET"])
def entry(index: int) -> Response:
    if (refused := _no_entry("audit.proof", index)) is not None:
        return refused
    rt = runtime()
    outcome = commit_call(actions.entry(rt, me(), index))
    if outcome.error is not None:
        return error_page(outcome.error)
    body = outcome.body or {}
    size = int(body["checkpoint"]["tree_size"])
    proof = actions.inclusion(rt, index, size)
    keys = [
        {"x": k["x"], "kid": k["kid"], "name": k["name"]}
        for k in rt.keys.jwks()["keys"]
        if k.get("crv") == "Ed25519"
    ]
    data = {
        "index": index,
        "leaf": body["leaf"],
        "leaf_hash": body["leaf_hash"],
        "tree_size": size,
        "proof": proof["proof"],
        "root_hash": body["checkpoint"]["root_hash"],
        "note": body["checkpoint"]["note"],
        "keys": keys,
        "suite": rt.suite.name,  # the page's script checks ed25519-sha256 only
    }
    pretty = json.dumps(body["entry"], ensure_ascii=False, indent=2, sort_keys=True)
    own = body["entry"].get("actor") == me().id
    return page("entry.html", data=body, proof_data=data, pretty=pretty, own=own, label=label)


@blp.route("/audit/<int:index>/receipt", methods=["GET"])
def receipt(index: int) -> Response:
    """A receipt for one's own entry, signed now by the platform over the entry's
    leaf, request and result hashes (DESIGN §5 receipt claims), as a JSON download."""
    if (refused := _no_entry("receipt.read", index)) is not None:
        return refused
    rt = runtime()
    pending, facts = actions.receipt(rt, me(), index)
    outcome = commit_call(pending)
    if outcome.error is not None or facts is None:
        assert outcome.error is not None
        return error_page(outcome.error)
    claims = receipt_claims(
        iss=rt.settings.audience,
        iat=int(rt.clock().timestamp()),
        audit_index=index,
        leaf_hash=facts["leaf_hash"],
        request_hash=facts["request_hash"] or "",
        result_hash=facts["result_hash"],
        request_id=facts["request_id"],
    )
    doc = {
        "receipt": rt.keys.sign_receipt(claims),
        "claims": claims,
        "entry": (outcome.body or {}).get("entry"),
        "keys": rt.keys.jwks(),
    }
    resp = make_response(json.dumps(doc, ensure_ascii=False, indent=2))
    resp.mimetype = "application/json"
    resp.headers["Content-Disposition"] = f'attachment; filename="receipt-{index}.json"'
    return resp


@blp.route("/integrity", methods=["GET"])
def integrity() -> Response:
    rt = runtime()
    outcome = commit_call(actions.integrity(rt))
    if outcome.error is not None:
        return error_page(outcome.error)
    body = outcome.body or {}
    checks = actions.integrity_checks(rt, body["checkpoint"])
    return page(
        "integrity.html",
        data=body,
        checks=checks,
        alarm=not all(c.ok for c in checks),
        label=label,
        witnessed_time=_unix,
    )


def _unix(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@blp.route("/budgets", methods=["GET"])
def budgets() -> Response:
    rt = runtime()
    outcome = commit_call(actions.budgets(rt, me()))
    if outcome.error is not None:
        return error_page(outcome.error)
    body = outcome.body or {}
    by_enterprise: dict[str, list[dict[str, Any]]] = {}
    for s in body["scopes"]:
        by_enterprise.setdefault(s["enterprise"], []).append(s)
    chart_of = {
        ent: charts.budget_chart(
            [h for h in body["history"] if h["enterprise"] == ent],
            {s["id"]: s["budget"]["epsilon"] for s in scopes},
            title=ent,
        )
        for ent, scopes in by_enterprise.items()
    }
    return page("budgets.html", data=body, by_enterprise=by_enterprise, charts=chart_of)


@blp.route("/oversight", methods=["GET"])
def oversight() -> Response:
    return show(actions.oversight(runtime()), "oversight.html", label=label)


@blp.route("/usage", methods=["GET"])
def usage() -> Response:
    days = _int_arg("days") or 30
    since = runtime().clock() - timedelta(days=min(days, 3660))
    return show(actions.usage(runtime(), me(), since), "usage.html", days=days, label=label)


@blp.route("/report", methods=["GET"])
def report() -> Response:
    rt = runtime()
    year = _int_arg("year") or rt.clock().year
    if not 2000 <= year <= 9999:
        raise InvalidRequest("year must be between 2000 and 9999", {"fields": {"year": []}})
    pending, holder = actions.report_checkpoint("report.read", year)
    outcome = commit_call(pending)
    if outcome.error is not None:
        return error_page(outcome.error)
    cp = holder[0]
    rep = disclosure.compute_from_log(rt, year, cp)
    if request.args.get("format") == "json":
        resp = make_response(json.dumps(rep, ensure_ascii=False, indent=2))
        resp.mimetype = "application/json"
        resp.headers["Content-Disposition"] = f'attachment; filename="disclosure-{year}.json"'
        return resp
    return page("report.html", report=rep, year=year, is_regulator=me().role is Role.REGULATOR)

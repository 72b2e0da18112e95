"""The audit trail over HTTP: entries, checkpoints, proofs, bundles, cosignatures."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime

from flask import Response, request, send_file
from flask_smorest import Blueprint

from audit.entry import format_time
from products.errors import InvalidRequest
from sandbox.actions import audit_access
from sandbox.api.calls import caller, json_body, respond, runtime
from sandbox.api.schemas import ref_response

blp = Blueprint("audit", __name__, url_prefix="/v1/audit", description="Audit trail")

MAX_INDEX = 2**62


def _int_arg(name: str, *, default: int | None = None, lo: int = 0) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(
            f"{name} must be an integer", {"fields": {name: ["not an integer"]}}
        ) from None
    if not lo <= value <= MAX_INDEX:
        raise InvalidRequest(
            f"{name} must be in [{lo}, 2^62]", {"fields": {name: [f"must be in [{lo}, 2^62]"]}}
        )
    return value


def _required_int(name: str) -> int:
    value = _int_arg(name)
    if value is None:
        raise InvalidRequest(
            f"query parameter {name!r} is required", {"fields": {name: ["required"]}}
        )
    return value


def _time_arg(name: str) -> datetime | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        t = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        format_time(t.astimezone(UTC))  # representable
        return t.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest(
            f"{name} must be an RFC 3339 time", {"fields": {name: ["not an RFC 3339 time"]}}
        ) from None


@blp.route("/entries", methods=["GET"])
@blp.doc(
    summary="Audit entries with filters and cursor paging (regulator: all; others: own)",
    parameters=[
        {"in": "query", "name": n, "schema": {"type": "string"}}
        for n in (
            "from",
            "to",
            "actor",
            "action",
            "decision",
            "product",
            "scope",
            "cursor",
            "limit",
        )
    ],
)
def entries() -> Response:
    decision = request.args.get("decision")
    if decision not in (None, "allow", "deny"):
        raise InvalidRequest(
            "decision must be allow or deny", {"fields": {"decision": ["allow | deny"]}}
        )
    return respond(
        audit_access.entries(
            runtime(),
            caller(),
            start_time=_time_arg("from"),
            end_time=_time_arg("to"),
            actor=request.args.get("actor") or None,
            action=request.args.get("action") or None,
            decision=decision,
            product=request.args.get("product") or None,
            scope=request.args.get("scope") or None,
            cursor=_int_arg("cursor", default=0) or 0,
            limit=_int_arg("limit", default=100, lo=1) or 100,
        )
    )


@blp.route("/checkpoint", methods=["GET"])
@blp.doc(
    summary="The latest signed checkpoint (C2SP tlog-checkpoint), with cosignatures",
    responses={"200": ref_response("Checkpoint")},
)
def checkpoint() -> Response:
    return respond(audit_access.checkpoint(runtime()))


@blp.route("/proofs/inclusion", methods=["GET"])
@blp.doc(
    summary="RFC 9162 inclusion proof of an entry",
    responses={"200": ref_response("InclusionProof")},
)
def inclusion() -> Response:
    index = _required_int("index")
    return respond(audit_access.inclusion(runtime(), index, _int_arg("tree_size")))


@blp.route("/proofs/consistency", methods=["GET"])
@blp.doc(
    summary="RFC 9162 consistency proof between two tree sizes",
    responses={"200": ref_response("ConsistencyProof")},
)
def consistency() -> Response:
    first = _required_int("first")
    return respond(audit_access.consistency(runtime(), first, _int_arg("second")))


@blp.route("/export", methods=["GET"])
@blp.doc(summary="An audit bundle (JSON Lines, DESIGN §7) of entries start ≤ i < end (regulator)")
def export() -> Response:
    rt = runtime()
    start = _int_arg("start", default=0) or 0
    pending, end = audit_access.export(rt, start, _int_arg("end"))
    answer = respond(pending)
    if answer.status_code != 200:
        return answer
    spool = tempfile.TemporaryFile(dir=rt.settings.data_dir)  # noqa: SIM115 - streamed out
    try:
        keys, witnesses = rt.bundle_keys()
        rt.audit.export(spool, start=start, end=end, keys=keys, witnesses=witnesses)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    resp = send_file(
        spool,
        mimetype="application/x-ndjson",
        as_attachment=True,
        download_name=f"audit-{start}-{end}.jsonl",
    )
    resp.headers["X-Audit-Index"] = answer.headers["X-Audit-Index"]
    return resp


@blp.route("/cosignatures", methods=["POST"])
@blp.doc(summary="Store a witness cosignature of a checkpoint (regulator)")
def cosign() -> Response:
    text = json_body().get("note")
    if not isinstance(text, str) or not text:
        raise InvalidRequest(
            "note: the checkpoint with your cosignature line", {"fields": {"note": ["required"]}}
        )
    return respond(audit_access.cosign(runtime(), caller(), text))

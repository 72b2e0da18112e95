"""The audit trail over HTTP: entries, checkpoints, proofs, bundles, cosignatures."""

from __future__ import annotations

import base64
import tempfile
from datetime import UTC, datetime
from typing import Any

from flask import Response, request, send_file
from flask_smorest import Blueprint

from audit.entry import format_time
from audit.errors import BadCheckpoint
from audit.note import CosignatureVerifier
from policies.principals import KeyAlg, Role
from products.errors import InvalidRequest
from sandbox.api.context import caller, note
from sandbox.api.lifecycle import json_body, runtime
from sandbox.api.schemas import ref_response

blp = Blueprint("audit", __name__, url_prefix="/v1/audit", description="Audit trail")

MAX_PAGE = 1000


MAX_INDEX = 2**62


def _int_arg(name: str, *, default: int | None = None, lo: int = 0) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        if default is None:
            raise InvalidRequest(
                f"query parameter {name!r} is required", {"fields": {name: ["required"]}}
            )
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


def _time_arg(name: str) -> str | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        t = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return format_time(t.astimezone(UTC))
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
def entries() -> dict[str, Any]:
    note()
    me = caller()
    decision = request.args.get("decision")
    if decision not in (None, "allow", "deny"):
        raise InvalidRequest(
            "decision must be allow or deny", {"fields": {"decision": ["allow | deny"]}}
        )
    page = runtime().audit.entries(
        start_time=_time_arg("from"),
        end_time=_time_arg("to"),
        actor=request.args.get("actor") or None,
        action=request.args.get("action") or None,
        decision=decision,
        product=request.args.get("product") or None,
        scope=request.args.get("scope") or None,
        involves=None if me.role is Role.REGULATOR else me.id,
        cursor=_int_arg("cursor", default=0),
        limit=min(_int_arg("limit", default=100, lo=1), MAX_PAGE),
    )
    return {
        "entries": [
            {
                "index": e.index,
                "leaf_hash": e.leaf_hash.hex(),
                "leaf": base64.b64encode(e.leaf).decode(),
                "entry": e.entry,
            }
            for e in page.entries
        ],
        "next_cursor": page.next_cursor,
    }


@blp.route("/checkpoint", methods=["GET"])
@blp.doc(
    summary="The latest signed checkpoint (C2SP tlog-checkpoint), with cosignatures",
    responses={"200": ref_response("Checkpoint")},
)
def checkpoint() -> dict[str, Any]:
    note()
    log = runtime().audit
    cp = log.checkpoint(force=True)
    body = cp.to_api()
    body["note"] = log.cosigned_checkpoint(cp.size) or cp.note
    # Extension: the newest checkpoint a witness cosigned, so any client can check that
    # its own view is consistent with what the regulator saw (split-view detection).
    body["cosigned_note"] = log.latest_cosigned_checkpoint()
    return body


@blp.route("/proofs/inclusion", methods=["GET"])
@blp.doc(
    summary="RFC 9162 inclusion proof of an entry",
    responses={"200": ref_response("InclusionProof")},
)
def inclusion() -> dict[str, Any]:
    index = _int_arg("index")
    note()
    log = runtime().audit
    tree_size = _int_arg("tree_size", default=log.size())
    return log.inclusion_proof(index, tree_size).to_api()


@blp.route("/proofs/consistency", methods=["GET"])
@blp.doc(
    summary="RFC 9162 consistency proof between two tree sizes",
    responses={"200": ref_response("ConsistencyProof")},
)
def consistency() -> dict[str, Any]:
    first = _int_arg("first")
    note()
    log = runtime().audit
    second = _int_arg("second", default=log.size())
    return log.consistency_proof(first, second).to_api()


@blp.route("/export", methods=["GET"])
@blp.doc(summary="An audit bundle (JSON Lines, DESIGN §7) of entries start ≤ i < end (regulator)")
def export() -> Response:
    rt = runtime()
    size = rt.audit.size()
    start = _int_arg("start", default=0)
    end = _int_arg("end", default=size)
    n = note()
    n.extra["range"] = f"{start}-{end}"
    spool = tempfile.TemporaryFile(dir=rt.settings.data_dir)  # noqa: SIM115 - streamed out
    try:
        keys, witnesses = rt.bundle_keys()
        rt.audit.export(spool, start=start, end=end, keys=keys, witnesses=witnesses)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return send_file(
        spool,
        mimetype="application/x-ndjson",
        as_attachment=True,
        download_name=f"audit-{start}-{end}.jsonl",
    )


@blp.route("/cosignatures", methods=["POST"])
@blp.doc(summary="Store a witness cosignature of a checkpoint (regulator)")
def cosign() -> tuple[dict[str, Any], int]:
    note()
    data = json_body()
    text = data.get("note")
    if not isinstance(text, str) or not text:
        raise InvalidRequest(
            "note: the checkpoint with your cosignature line", {"fields": {"note": ["required"]}}
        )
    me = caller()
    last: BadCheckpoint | None = None
    for key in me.keys:
        if not key.active or key.alg is not KeyAlg.EDDSA:
            continue
        verifier = CosignatureVerifier.from_key(me.id, key.pem)
        try:
            stored = runtime().audit.add_cosignature(text, verifier)
        except BadCheckpoint as exc:
            last = exc
            continue
        # 201 only when this call stored the line; 200 with the line that was kept when
        # this witness had already cosigned the checkpoint.
        answer = {"witness": me.id, "line": stored.line, "created": stored.created}
        return answer, 201 if stored.created else 200
    raise InvalidRequest(
        last.message if last else f"{me.id!r} has no active Ed25519 key to cosign with",
        {"witness": me.id},
    )

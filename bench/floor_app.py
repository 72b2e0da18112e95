"""The floor of a signed, receipted verification call: a bench-only WSGI app.

``gunicorn 'bench.floor_app:create_app()'`` (settings from ``SANDBOX_*``, like the
real app) serves ``GET /v1/health`` and ``POST /v1/verifications/<vp>``. The second
does only what every signed, audited call must do whatever the store: read the body,
check the caller's token with ``policies.calls.verify_call`` (pyjwt, Ed25519),
encode the audit entry canonically and hash it, and sign a receipt with the
platform key. It keeps no nonce, counts no rate, looks nothing up and writes
nothing, so it answers every subject ``{"match": true}``; its tokens are the
bench's own (``bench/verify_throughput.py``, which measures it side by side with the
product).

DESIGN §10 states the verification target against it: the product's signed, audited
verification must reach at least 0.7 of its throughput under the same server.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import Flask, Response, request

from audit.canonical import encode
from audit.entry import request_hash, result_hash
from audit.receipts import receipt_claims
from policies.calls import verify_call
from policies.errors import AuthError
from policies.principals import Principal
from sandbox.runtime import Runtime
from sandbox.settings import Settings


def create_app(runtime: Runtime | None = None) -> Flask:
    """The floor app over ``runtime`` (default: the deployment named by ``SANDBOX_*``)."""
    rt = runtime or Runtime.open(Settings.from_env())
    principals: dict[str, Principal | None] = {}

    def principal(pid: str) -> Principal | None:
        if pid not in principals:
            principals[pid] = rt.principals.find(pid)
        return principals[pid]

    app = Flask("floor")

    @app.errorhandler(AuthError)
    def refused(exc: AuthError) -> tuple[dict[str, Any], int]:
        return {"error": {"code": exc.code, "message": exc.message}}, 401

    @app.get("/v1/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/verifications/<vp>")
    def verify(vp: str) -> Response:
        body = request.get_data()
        now = rt.clock()
        call = verify_call(
            request.headers.get("Authorization"),
            method="POST",
            path_and_query=request.path,
            body_sha256=hashlib.sha256(body).digest(),
            policy=rt.call_policy,
            principals=principal,
            now=now,
        )
        subject = json.loads(body)["subject"]
        answer: dict[str, Any] = {"match": True}
        rh = request_hash("POST", request.path, body)
        leaf = encode(
            {
                "actor": call.principal.id,
                "role": call.principal.role.value,
                "action": "verify",
                "target": {"verification_product": vp},
                "subject": hashlib.sha256(json.dumps(subject).encode()).hexdigest(),
                "request_hash": rh,
                "decision": "allow",
                "epsilon": "0",
                "result_hash": result_hash(answer),
                "jti": call.jti,
                "client": request.remote_addr or "",
                "time": now.isoformat(),
            }
        )
        claims = receipt_claims(
            iss=rt.settings.audience,
            iat=int(now.timestamp()),
            audit_index=0,
            leaf_hash=hashlib.sha256(b"\x00" + leaf).digest(),
            request_hash=rh,
            result_hash=result_hash(answer),
        )
        answer["receipt"] = rt.keys.sign_receipt(claims)
        return Response(json.dumps(answer), mimetype="application/json")

    return app

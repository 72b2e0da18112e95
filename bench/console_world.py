"""A demo deployment with some history, for the console's bench and screenshots.

``populate(data_dir)`` runs ``sandbox demo`` there, then, as the demo principals,
makes the calls a console has to show: queries and previews, verifications, refusals,
a grant, a suspension and a resumption, a witness cosignature. Everything goes through
the real actions and the audit log (in-process, no server).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from audit.note import CosignatureSigner
from policies.calls import sign_call
from policies.principals import jwk_thumbprint, public_pem_of
from sandbox.app import create_app
from sandbox.runtime import Runtime
from sandbox.settings import Settings


class Signer:
    """A demo principal calling the app in-process with signed calls."""

    def __init__(self, client: FlaskClient, pid: str, key: bytes, audience: str) -> None:
        self.client, self.id, self.key, self.audience = client, pid, key, audience
        self.kid = jwk_thumbprint(public_pem_of(key))

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else b""
        token = sign_call(
            self.key,
            issuer=self.id,
            kid=self.kid,
            audience=self.audience,
            method=method,
            path_and_query=path,
            body=data,
        )
        headers = {"Authorization": f"Bearer {token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        resp = self.client.open(path, method=method, data=data, headers=headers)
        out = resp.get_json(silent=True)
        resp.close()
        return out


def demo(data_dir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "sandbox", "--data-dir", str(data_dir), "demo", "--quiet"],
        check=True,
        capture_output=True,
    )


def signers(app: Flask, data_dir: Path, audience: str) -> dict[str, Signer]:
    keys = data_dir / "demo" / "keys"
    return {
        pid: Signer(app.test_client(), pid, (keys / f"{pid}.key").read_bytes(), audience)
        for pid in ("op-demo", "ent-demo", "reg-demo")
    }


def activity(rt: Runtime, app: Flask, data_dir: Path) -> None:
    """The calls the console shows (idempotent enough to run once per data dir)."""
    s = signers(app, data_dir, rt.settings.audience)
    ent, op, reg = s["ent-demo"], s["op-demo"], s["reg-demo"]
    queries = [
        "SELECT district, COUNT(*) AS n FROM enterprise_registry GROUP BY district",
        "SELECT district, AVG(registered_capital) AS capital FROM enterprise_registry "
        "GROUP BY district",
        "SELECT COUNT(*) AS n FROM enterprise_registry WHERE status = 'active'",
    ]
    for i, sql in enumerate(queries):
        body = {"scope": "sc-demo-registry", "sql": sql, "epsilon": [0.2, 0.3, 0.4][i]}
        ent.call("POST", "/v1/queries/preview", body)
        ent.call("POST", "/v1/queries", body)
    ent.call("POST", "/v1/queries", {"scope": "sc-demo-registry", "sql": "SELECT *", "epsilon": 1})
    verify = json.loads((data_dir / "demo" / "verify.json").read_text())
    for _ in range(5):
        ent.call("POST", "/v1/verifications/enterprise-good-standing", verify)
    ent.call("GET", "/v1/scopes/sc-nope")
    op.call("POST", "/v1/scopes/sc-demo-population/suspend", {"reason": "review of purpose"})
    op.call("POST", "/v1/scopes/sc-demo-population/resume", {"reason": "purpose confirmed"})
    cp = reg.call("GET", "/v1/audit/checkpoint")
    witness = CosignatureSigner.from_pem(reg.key, name="reg-demo")
    text = cp["note"].split("\n\n")[0] + "\n"
    note = cp["note"] + witness.sign(text, int(rt.clock().timestamp())).line()
    reg.call("POST", "/v1/audit/cosignatures", {"note": note})
    ent.call("POST", "/v1/queries", {"scope": "sc-demo-social", "sql": queries[0], "epsilon": 0.5})


def populate(data_dir: Path) -> None:
    """``sandbox demo`` in ``data_dir`` plus :func:`activity`."""
    demo(data_dir)
    rt = Runtime.open(Settings(data_dir=data_dir, checkpoint_interval_s=0))
    try:
        activity(rt, create_app(runtime=rt), data_dir)
    finally:
        rt.close()

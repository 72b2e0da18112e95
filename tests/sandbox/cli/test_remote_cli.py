"""Commands that talk to a running server: call, scopes apply, audit witness."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sandbox.cli import main
from tests.sandbox.servers import running

POLICY = """
scopes:
  - id: sc-file
    enterprise: ent-demo
    product: enterprise_registry
    purpose: policy file test
    operations: {aggregate: {columns: [district]}, verify: [enterprise-good-standing]}
    epsilon: 2
    max_epsilon_per_query: 1
    rate_per_minute: 60
    daily_quota: 1000
    valid_from: 2026-01-01T00:00:00Z
    valid_until: 2099-01-01T00:00:00Z
"""


def test_call_apply_and_witness(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "var"
    assert (
        runner.invoke(main, ["--data-dir", str(data), "demo", "--rows", "40", "--quiet"]).exit_code
        == 0
    )
    keys = data / "demo" / "keys"
    with running(data, None, workers=1) as server:

        def cli(*args: str, who: str = "op-demo") -> tuple[int, str]:
            r = runner.invoke(
                main,
                [
                    *args[:1],
                    *args[1:],
                    "--url",
                    server.url,
                    "--id",
                    who,
                    "--key",
                    str(keys / f"{who}.key"),
                ],
            )
            return r.exit_code, r.output

        code, out = cli("call", "GET", "/v1/products", who="ent-demo")
        assert code == 0 and json.loads(out.split("# audit")[0])["products"]
        code, out = cli("call", "POST", "/v1/scopes", who="ent-demo")
        assert code != 0 and "403 forbidden" in out

        policy = tmp_path / "scopes.yaml"
        policy.write_text(POLICY)
        code, out = cli("scopes", "apply", str(policy), "--dry-run")
        assert code == 0 and "+ grant   sc-file" in out and "dry run" in out
        code, out = cli("scopes", "apply", str(policy))
        assert code == 0 and "applied: 1 change(s)" in out
        code, out = cli("scopes", "apply", str(policy))
        assert code == 0 and "= unchanged sc-file" in out and "applied: 0" in out
        policy.write_text(POLICY.replace("epsilon: 2", "epsilon: 3"))
        code, out = cli("scopes", "apply", str(policy))
        assert code != 0 and "conflict" in out

        state = tmp_path / "witness.json"
        code, out = cli("audit", "witness", "--state", str(state), who="reg-demo")
        assert code == 0 and "first checkpoint" in out, out
        code, out = cli("audit", "witness", "--state", str(state), who="reg-demo")
        assert code == 0 and "consistent with size" in out, out
        # A forged state (a root the log never had) makes the witness refuse to cosign.
        saved = json.loads(state.read_text())
        saved["root"] = "A" * 43 + "="
        state.write_text(json.dumps(saved))
        code, out = cli("audit", "witness", "--state", str(state), who="reg-demo")
        assert code != 0 and "refusing to cosign" in out


def test_an_sm2_sm3_deployment_over_http(tmp_path: Path) -> None:
    # DESIGN §13 end to end through gunicorn: SM2 demo keys sign the calls (SM2SM3),
    # the client checks SM2 receipts and SM3 result hashes, the regulator witnesses with
    # its SM2 key and pins the suite in its state file.
    from policies.sm2 import is_sm2_pem
    from sandbox.client import Client

    runner = CliRunner()
    data = tmp_path / "var"
    init = runner.invoke(main, ["--data-dir", str(data), "init", "--suite", "sm2-sm3"])
    assert init.exit_code == 0, init.output
    demo = runner.invoke(main, ["--data-dir", str(data), "demo", "--rows", "40", "--quiet"])
    assert demo.exit_code == 0, demo.output
    keys = data / "demo" / "keys"
    assert is_sm2_pem((keys / "ent-demo.key").read_bytes())
    with running(data, None, workers=1) as server:
        client = Client(server.url, "ent-demo", (keys / "ent-demo.key").read_bytes())
        try:
            assert client.jwks()["suite"] == "sm2-sm3"
            body = json.loads((data / "demo" / "verify.json").read_text())
            path = "/v1/verifications/enterprise-good-standing"
            answer = client.request("POST", path, json_body=body)
            claims = client.verify_receipt(answer)
            assert claims["request_id"] == "demo-0001"
        finally:
            client.close()
        state = tmp_path / "witness.json"
        for expected in ("first checkpoint", "consistent with size"):
            r = runner.invoke(
                main,
                [
                    "audit",
                    "witness",
                    "--state",
                    str(state),
                    "--url",
                    server.url,
                    "--id",
                    "reg-demo",
                    "--key",
                    str(keys / "reg-demo.key"),
                ],
            )
            assert r.exit_code == 0 and expected in r.output, r.output
        assert json.loads(state.read_text())["suite"] == "sm2-sm3"

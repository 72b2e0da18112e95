"""``sandbox demo``: a complete demo deployment under the data dir, idempotently.

Generates the synthetic public data (enterprise registry, social insurance,
population), registers the products and verification products, creates an
operator, an enterprise and a regulator with key files, grants scopes, and writes
example request bodies; every step is recorded in the audit log.
"""

from __future__ import annotations

import csv
import json
import shlex
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from policies.principals import PrincipalSchema, Role, generate_keypair
from policies.scopes import GrantSchema
from products.errors import NotFound
from products.manifest import Classification, NewManifestSchema
from products.verification import VerificationSchema
from sandbox.actions import model_products, models, principals, products, scopes, verifications
from sandbox.cli.admin import load_with_progress
from sandbox.cli.common import CliContext
from sandbox.demo import (
    OPERATING_RISK_ID,
    OPERATING_RISK_SPEC,
    DemoSizes,
    manifest_data,
    model_product_data,
    verification_data,
    write_all,
)
from sandbox.models.products import ModelProductSchema
from sandbox.models.requests import TrainRequest
from sandbox.platform_keys import key_alg_for
from sandbox.runtime import Runtime

PRINCIPALS = (
    ("op-demo", Role.OPERATOR, "广州市数据局授权运营方 Demo Operator"),
    ("ent-demo", Role.ENTERPRISE, "示例征信有限公司 Demo Credit Ltd"),
    ("reg-demo", Role.REGULATOR, "数据监管局 Demo Supervising Bureau"),
)
SCOPES: dict[str, tuple[str, str, list[str]]] = {
    "sc-demo-registry": (
        "enterprise_registry",
        "credit risk statistics and counterpart checks for SME lending",
        [
            "enterprise-check",
            "enterprise-good-standing",
            "enterprise-four-elements",
            "enterprise-capital-band",
            "enterprise-established-before",
        ],
    ),
    "sc-demo-social": (
        "social_insurance",
        "employment and income verification for consumer credit, with borrower consent",
        ["social-insurance-months", "employment-check"],
    ),
    "sc-demo-population": (
        "population",
        "district-level household statistics for branch planning",
        ["household-assistance"],
    ),
}


def _key_pair(keys_dir: Path, pid: str, alg: str) -> str:
    """Return the PEM public key of ``pid``'s demo key pair, creating it (``alg``: the
    deployment suite's key type) if needed."""
    private, public = keys_dir / f"{pid}.key", keys_dir / f"{pid}.pub"
    if not private.exists():
        priv_pem, pub_pem = generate_keypair(alg)
        keys_dir.mkdir(parents=True, exist_ok=True)
        private.write_bytes(priv_pem)
        private.chmod(0o600)
        public.write_bytes(pub_pem)
    return public.read_text()


def _principals(ctx: CliContext, rt: Runtime, keys_dir: Path) -> None:
    for pid, role, name in PRINCIPALS:
        pem = _key_pair(keys_dir, pid, key_alg_for(rt.suite))
        if rt.principals.find(pid) is None:
            data = {"id": pid, "role": role.value, "name": name, "keys": [{"public_key": pem}]}
            request = ctx.parse(PrincipalSchema, data, "principal", "principal.register")
            ctx.call(principals.register(rt, request, None, roles=tuple(Role)))


def _products(ctx: CliContext, rt: Runtime, data_dir: Path, sizes: DemoSizes, quiet: bool) -> None:
    files: dict[str, Path] | None = None
    for pid, data in manifest_data().items():
        try:
            record = rt.catalogue.get(pid)
        except NotFound:
            manifest = ctx.parse(NewManifestSchema, data, "product manifest", "product.register")
            ctx.call(products.register(rt, manifest, "op-demo"))
            record = rt.catalogue.get(pid)
        if record.current is None:
            if files is None:
                click.echo(f"generating demo data in {data_dir} …")
                files = write_all(data_dir, sizes)
            load_with_progress(ctx, pid, files[pid], "op-demo", quiet=quiet)
    for vp_id, definition in verification_data().items():
        if rt.catalogue.verification_product_owner(vp_id) is None:
            loaded = ctx.parse(
                VerificationSchema,
                definition,
                "verification product",
                "verification_product.register",
            )
            ctx.call(verifications.define(rt, "op-demo", loaded))


def _scopes(ctx: CliContext, rt: Runtime) -> None:
    now = rt.clock()
    for sid, (product_id, purpose, verify) in SCOPES.items():
        try:
            rt.scopes.get(sid)
            continue
        except NotFound:
            pass
        manifest = rt.catalogue.get(product_id).manifest
        columns = [
            c.name for c in manifest.columns if c.classification is not Classification.IDENTIFIER
        ]
        grant = {
            "id": sid,
            "enterprise": "ent-demo",
            "product": product_id,
            "purpose": purpose,
            "operations": {
                "aggregate": {"columns": columns},
                "verify": verify,
                "synthetic": True,
                "train": True,
            },
            "epsilon": 10,
            "max_epsilon_per_query": 1,
            "rate_per_minute": 600,
            "daily_quota": 100_000,
            "valid_from": (now - timedelta(days=1)).isoformat(),
            "valid_until": (now + timedelta(days=365)).isoformat(),
        }
        request = ctx.parse(GrantSchema, grant, "scope", "scope.grant")
        ctx.call(scopes.grant(rt, request, "op-demo"))


#: Scoring scopes granted once the model products exist (DESIGN §11.3).
SCORING_SCOPES: dict[str, tuple[str, str, str]] = {
    "sc-demo-risk-scoring": (
        "enterprise_registry",
        OPERATING_RISK_ID,
        "operating-risk bands of SME borrowers for loan pricing",
    ),
    "sc-demo-stability-scoring": (
        "social_insurance",
        "social-insurance-stability",
        "contribution stability of consumer-credit applicants, with their consent",
    ),
}


def _risk_bands(histogram: dict[str, Any]) -> list[dict[str, Any]]:
    """Band cut-offs from the DP score histogram (post-processing): the top fifth of
    the noisy mass is A, the next 40% B, the next 30% C, the bottom tenth D."""
    edges = histogram["edges"]
    mass = [max(g, 0) + max(b, 0) for g, b in zip(histogram["good"], histogram["bad"], strict=True)]
    total = max(sum(mass), 1)
    cuts: list[float] = []
    above = 0.0
    for i in range(len(mass) - 1, -1, -1):
        above += mass[i]
        while len(cuts) < 3 and above / total >= (0.2, 0.6, 0.9)[len(cuts)]:
            cuts.append(float(edges[i]))
    while len(cuts) < 3:
        cuts.append(float(edges[0]))
    labels = ("A 低风险", "B 较低风险", "C 关注", "D 高风险")
    mins = sorted(set(cuts), reverse=True)[:3]
    bands = [{"label": labels[i], "min_score": m} for i, m in enumerate(mins)]
    bands.append({"label": labels[len(bands)], "min_score": float(edges[0]) - 1e6})
    return bands


def _models(ctx: CliContext, rt: Runtime) -> None:
    """The two demo model products, filed: an operating-risk band trained as a DP
    scorecard on the registry, and a hand-written social-insurance stability band."""
    regulator = rt.principals.find("reg-demo")
    enterprise = rt.principals.find("ent-demo")
    assert regulator is not None and enterprise is not None
    definitions: list[dict[str, Any]] = []
    if rt.models.owner(OPERATING_RISK_ID) is None:
        req = TrainRequest(
            "sc-demo-registry", "enterprise_registry", Decimal(1), OPERATING_RISK_SPEC
        )
        trained = ctx.call(models.train(rt, enterprise, req)).body
        assert trained is not None
        definitions.append(
            {
                "id": OPERATING_RISK_ID,
                "product": "enterprise_registry",
                "description": "经营风险等级: the risk of being listed for abnormal operation, "
                "from a DP scorecard trained in the sandbox (release "
                f"{trained['release']}); bands cut at the DP score histogram's quantiles.",
                "key": ["uscc"],
                "key_formats": {"uscc": "uscc"},
                "from_release": trained["release"],
                "output": {"bands": _risk_bands(trained["metrics"]["score_histogram"])},
            }
        )
    for mp_id, data in model_product_data().items():
        if rt.models.owner(mp_id) is None:
            definitions.append(data)
    for data in definitions:
        loaded = ctx.parse(ModelProductSchema, data, "model product", "model_product.define")
        defined = ctx.call(model_products.define(rt, "op-demo", loaded)).body
        assert defined is not None
        ctx.call(
            model_products.transition(
                rt, regulator, defined["id"], defined["version"], "file", "demo filing (备案)"
            )
        )
    now = rt.clock()
    for sid, (product_id, mp_id, purpose) in SCORING_SCOPES.items():
        try:
            rt.scopes.get(sid)
            continue
        except NotFound:
            pass
        grant = {
            "id": sid,
            "enterprise": "ent-demo",
            "product": product_id,
            "purpose": purpose,
            "operations": {"score": [mp_id]},
            "epsilon": 1,
            "rate_per_minute": 600,
            "daily_quota": 100_000,
            "valid_from": (now - timedelta(days=1)).isoformat(),
            "valid_until": (now + timedelta(days=365)).isoformat(),
        }
        request = ctx.parse(GrantSchema, grant, "scope", "scope.grant")
        ctx.call(scopes.grant(rt, request, "op-demo"))


def _examples(demo_dir: Path, data_dir: Path) -> dict[str, Path]:
    """Write example request bodies built on the generated data; return their paths."""
    with (data_dir / "enterprise_registry.csv").open(encoding="utf-8") as f:
        first = next(csv.DictReader(f))
    bodies: dict[str, Any] = {
        "query.json": {
            "scope": "sc-demo-registry",
            "epsilon": 0.5,
            # CLIP narrows the manifest's bounds (0 to 100 million yuan) for this
            # statistic: ten times less noise, and the few larger capitals count at 10M.
            "sql": "SELECT district, COUNT(*) AS enterprises, "
            "AVG(CLIP(registered_capital, 0, 10000000)) AS avg_capital "
            "FROM enterprise_registry GROUP BY district ORDER BY district",
        },
        "verify.json": {
            "scope": "sc-demo-registry",
            "subject": {"uscc": first["uscc"]},
            "request_id": "demo-0001",
        },
        "train.json": OPERATING_RISK_SPEC,
        "synthetic.json": {
            "scope": "sc-demo-registry",
            "epsilon": 1,
            "columns": ["district", "industry", "registered_capital", "status", "abnormal_list"],
            "rows": 1000,
            "method": "mst",
        },
        "score.json": {
            "scope": "sc-demo-risk-scoring",
            "subject": {"uscc": first["uscc"]},
            "request_id": "demo-score-0001",
        },
    }
    out = {}
    for name, body in bodies.items():
        path = demo_dir / name
        path.write_text(json.dumps(body, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        out[name] = path
    return out


@click.command("demo")
@click.option(
    "--rows",
    type=click.IntRange(10, 100_000_000),
    default=2000,
    show_default=True,
    help="Enterprises in the registry; social insurance gets 2.5× and population "
    "1.5× as many rows.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_obj
def demo(ctx: CliContext, rows: int, quiet: bool) -> None:
    """Set up a complete demo deployment in the data dir (idempotent)."""
    rt = ctx.runtime(create=True)
    demo_dir = ctx.settings.data_dir / "demo"
    keys_dir, data_dir = demo_dir / "keys", demo_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    sizes = DemoSizes(rows, int(rows * 2.5), int(rows * 1.5))
    _principals(ctx, rt, keys_dir)
    _products(ctx, rt, data_dir, sizes, quiet)
    _scopes(ctx, rt)
    _models(ctx, rt)
    examples = _examples(demo_dir, data_dir)
    size = rt.audit.size()
    ctx.close()
    base = shlex.quote(str(ctx.settings.data_dir))
    key = shlex.quote(str(keys_dir / "ent-demo.key"))
    click.echo(f"""
Demo deployment ready in {ctx.settings.data_dir.resolve()} ({size} audit entries so far).

  principals  op-demo (operator), ent-demo (enterprise), reg-demo (regulator)
  keys        {keys_dir}/<id>.key ({rt.suite.key_type}, PKCS#8) and .pub
  products    enterprise_registry, social_insurance, population (+ 8 verification products)
  models      {OPERATING_RISK_ID} (a DP scorecard trained here), social-insurance-stability
              (both filed by reg-demo)
  scopes      {", ".join(SCOPES)} (granted to ent-demo, epsilon 10 each,
              synthetic data and training included); {", ".join(SCORING_SCOPES)}

Run the API:   .venv/bin/sandbox --data-dir {base} serve
Then browse    http://127.0.0.1:8000/v1/docs
Signed calls, as the enterprise:
  .venv/bin/sandbox call POST /v1/queries --json {examples["query.json"]} --id ent-demo --key {key}
  .venv/bin/sandbox call POST /v1/verifications/enterprise-good-standing \\
      --json {examples["verify.json"]} --id ent-demo --key {key}
Sandbox model development, as the enterprise (数据沙箱模型开发):
  .venv/bin/sandbox train --scope sc-demo-registry --product enterprise_registry --epsilon 1 \\
      --spec {examples["train.json"]} --out model.json --id ent-demo --key {key}
  .venv/bin/sandbox synth enterprise_registry --scope sc-demo-registry --epsilon 1 \\
      --columns district,industry,registered_capital,status,abnormal_list --rows 1000 \\
      --out synthetic.csv --id ent-demo --key {key}
  .venv/bin/sandbox call POST /v1/model-products/{OPERATING_RISK_ID}/score \\
      --json {examples["score.json"]} --id ent-demo --key {key}
As the regulator:
  .venv/bin/sandbox call GET /v1/audit/checkpoint --id reg-demo --key {keys_dir}/reg-demo.key
  .venv/bin/sandbox models list --id reg-demo --key {keys_dir}/reg-demo.key
""")


COMMANDS = [demo]

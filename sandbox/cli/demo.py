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
from pathlib import Path
from typing import Any

import click

from policies.principals import PrincipalSchema, Role, generate_keypair
from policies.scopes import GrantSchema
from products.errors import NotFound
from products.manifest import Classification, NewManifestSchema
from products.verification import VerificationSchema
from sandbox.actions import principals, products, scopes, verifications
from sandbox.cli.admin import load_with_progress
from sandbox.cli.common import CliContext
from sandbox.demo import DemoSizes, manifest_data, verification_data, write_all
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
            "operations": {"aggregate": {"columns": columns}, "verify": verify},
            "epsilon": 10,
            "max_epsilon_per_query": 1,
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
            "sql": "SELECT district, COUNT(*) AS enterprises, "
            "AVG(registered_capital) AS avg_capital FROM enterprise_registry "
            "GROUP BY district ORDER BY district",
        },
        "verify.json": {
            "scope": "sc-demo-registry",
            "subject": {"uscc": first["uscc"]},
            "request_id": "demo-0001",
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
  scopes      {", ".join(SCOPES)} (granted to ent-demo, epsilon 10 each)

Run the API:   .venv/bin/sandbox --data-dir {base} serve
Then browse    http://127.0.0.1:8000/v1/docs
Signed calls, as the enterprise:
  .venv/bin/sandbox call POST /v1/queries --json {examples["query.json"]} --id ent-demo --key {key}
  .venv/bin/sandbox call POST /v1/verifications/enterprise-good-standing \\
      --json {examples["verify.json"]} --id ent-demo --key {key}
As the regulator:
  .venv/bin/sandbox call GET /v1/audit/checkpoint --id reg-demo --key {keys_dir}/reg-demo.key
""")


COMMANDS = [demo]

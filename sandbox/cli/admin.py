"""Local administration: ``init``, ``principals add``, ``products register``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from audit.suites import SUITE_NAMES
from policies.principals import PrincipalSchema, Role
from products.errors import InvalidRequest
from products.loader import DataFormat, LoadProgress
from products.manifest import NewManifestSchema
from products.yamlfile import load_yaml
from sandbox.actions import principals as principals_actions
from sandbox.actions import products as products_actions
from sandbox.cli.common import CliContext


@click.command("init")
@click.option(
    "--suite",
    type=click.Choice(SUITE_NAMES),
    default=None,
    help="The cryptographic suite, chosen once for the deployment's life (DESIGN §13; "
    "default ed25519-sha256). A different suite for an existing deployment is refused.",
)
@click.pass_obj
def init(ctx: CliContext, suite: str | None) -> None:
    """Create the stores and the platform's signing key (idempotent)."""
    ctx.settings = ctx.settings.with_overrides(suite=suite)
    rt = ctx.runtime(create=True)
    click.echo(f"data dir     {ctx.settings.data_dir.resolve()}")
    click.echo(f"store        {_redacted(ctx.settings.effective_database_url)}")
    click.echo(f"suite        {rt.suite.name}")
    click.echo(f"platform key {rt.keys.current.kid}")
    ctx.close()


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@click.group("principals")
def principals() -> None:
    """Principals (operators, enterprises, regulators)."""


@principals.command("add")
@click.option("--id", "principal_id", required=True)
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option(
    "--public-key",
    "public_key",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="SPKI PEM file.",
)
@click.option("--kid", default=None, help="Default: the key's RFC 7638 thumbprint.")
@click.option("--name", default=None, help="Display name (default: the id).")
@click.pass_obj
def principals_add(
    ctx: CliContext,
    principal_id: str,
    role: str,
    public_key: str,
    kid: str | None,
    name: str | None,
) -> None:
    """Register a principal locally (how the first operator is created); audited."""
    rt = ctx.runtime(create=True)
    key = {"public_key": Path(public_key).read_text(), **({"kid": kid} if kid else {})}
    data = {"id": principal_id, "role": role, "name": name or principal_id, "keys": [key]}
    request = ctx.parse(PrincipalSchema, data, "principal", "principal.register")
    outcome = ctx.call(principals_actions.register(rt, request, None, roles=tuple(Role)))
    assert outcome.body is not None
    kids = ", ".join(k["kid"] for k in outcome.body["keys"])
    click.echo(f"added {role} {principal_id!r} with kid {kids} (audit index {outcome.index})")
    ctx.close()


@click.group("products")
def products() -> None:
    """Data products: register manifests and load rows."""


def read_document(path: Path) -> Any:
    """Return the data of a YAML (1.2, as manifests are read) or JSON file: a manifest,
    a training spec, a model definition. Raises ``InvalidRequest``."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            return json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: JSON, huge integers
        raise InvalidRequest(f"{path} is not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise InvalidRequest(f"{path} nests too deeply") from None
    return load_yaml(text, str(path))


@products.command("register")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--data",
    "data_file",
    type=click.Path(exists=True, dir_okay=False),
    help="CSV or Parquet rows to load as the first version.",
)
@click.option(
    "--owner",
    default="operator",
    show_default=True,
    help="Operator principal that owns the product.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_obj
def products_register(
    ctx: CliContext, manifest: str, data_file: str | None, owner: str, quiet: bool
) -> None:
    """Register a product from MANIFEST (YAML or JSON) and load its rows; audited."""
    # What can be checked before anything is written is checked first: the manifest's
    # syntax and the data file's format (a load that fails later leaves the product
    # registered without data; load it with PUT /v1/products/{id}/data).
    data = read_document(Path(manifest))
    if data_file:
        DataFormat.from_name(Path(data_file).name)
    rt = ctx.runtime(create=True)
    product = ctx.parse(NewManifestSchema, data, "product manifest", "product.register")
    outcome = ctx.call(products_actions.register(rt, product, owner))
    assert outcome.body is not None
    product_id = str(outcome.body["id"])
    click.echo(f"registered product {product_id!r} (audit index {outcome.index})")
    if data_file:
        load_with_progress(ctx, product_id, Path(data_file), owner, quiet=quiet)
    ctx.close()


def load_with_progress(
    ctx: CliContext, product_id: str, data_file: Path, owner: str, *, quiet: bool = False
) -> None:
    """Load rows with a progress bar per stage; audited as ``product.data``."""
    rt = ctx.runtime()
    fmt = DataFormat.from_name(data_file.name)
    with Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[rate]}"),
        disable=quiet,
        transient=False,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, fraction: float, info: LoadProgress) -> None:
            if stage == "done":
                return
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=1.0, rate="")
                for other, tid in tasks.items():  # earlier stages are complete
                    if other != stage:
                        bar.update(tid, completed=1.0)
            rate = f"{info.rows_per_s:,.0f} rows/s" if info.rows_per_s else ""
            if info.eta_s is not None and fraction < 1.0:
                rate += f", ETA {info.eta_s:,.0f} s"
            bar.update(tasks[stage], completed=fraction, rate=rate)

        up = products_actions.upload(
            rt, owner, product_id, data_file, fmt, owner_only=False, progress=progress
        )
        for tid in tasks.values():
            bar.update(tid, completed=1.0)
    try:
        outcome = ctx.call(up.pending)
    except BaseException:
        up.discard()
        raise
    assert outcome.body is not None
    click.echo(
        f"loaded {outcome.body['row_count']} rows into {product_id!r} version "
        f"{outcome.body['version']} (sha256 {str(outcome.body['content_hash'])[:16]}…, "
        f"audit index {outcome.index})"
    )
    for column, counts in outcome.body.get("load", {}).get("clipped", {}).items():
        if counts["below"] or counts["above"]:
            click.echo(
                f"  {column}: {counts['below']:,} values below and {counts['above']:,} above "
                "the manifest's bounds (stored as they are; clipped in sums and averages)"
            )


COMMANDS = [init, principals, products]

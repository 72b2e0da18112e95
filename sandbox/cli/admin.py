"""Local administration: ``init``, ``principals add``, ``products register``."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from policies.principals import Role, jwk_thumbprint, parse_key
from products.errors import DomainError, InvalidRequest
from products.loader import DataFormat
from products.yamlfile import load_yaml
from sandbox.actions.products import load_product_data, register_product
from sandbox.cli.common import CliContext


def _argv() -> str:
    return shlex.join(["sandbox", *sys.argv[1:]])


@click.command("init")
@click.pass_obj
def init(ctx: CliContext) -> None:
    """Create the stores and the platform's signing key (idempotent)."""
    rt = ctx.runtime(create=True)
    click.echo(f"data dir     {ctx.settings.data_dir.resolve()}")
    click.echo(f"store        {_redacted(ctx.settings.effective_database_url)}")
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
    pem = Path(public_key).read_text()
    key = parse_key({"public_key": pem, "kid": kid or jwk_thumbprint(pem)})
    target = {"principal": principal_id}
    try:
        p = rt.principals.add(
            principal_id, Role(role), name or principal_id, [key], created_by=None
        )
    except DomainError as exc:
        ctx.audit_local(
            "principal.register",
            target,
            _argv(),
            None,
            decision="deny",
            reason=f"{exc.code}: {exc.message}",
        )
        raise
    index = ctx.audit_local("principal.register", target, _argv(), p.to_dict())
    click.echo(f"added {role} {principal_id!r} with kid {key.kid} (audit index {index})")
    ctx.close()


@click.group("products")
def products() -> None:
    """Data products: register manifests and load rows."""


def read_manifest(path: Path) -> Any:
    """Return the manifest data of a YAML or JSON file. Raises ``InvalidRequest``."""
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
    # registered without data; docs/architecture.md, known limitations).
    data = read_manifest(Path(manifest))
    if data_file:
        DataFormat.from_name(Path(data_file).name)
    rt = ctx.runtime(create=True)
    product_id = str(data.get("id")) if isinstance(data, dict) else "?"
    target = {"product": product_id}
    try:
        record = register_product(rt, data, owner)
    except DomainError as exc:
        ctx.audit_local(
            "product.register",
            target,
            _argv(),
            None,
            decision="deny",
            reason=f"{exc.code}: {exc.message}",
        )
        raise
    ctx.audit_local("product.register", target, _argv(), record.to_dict(include_counts=True))
    click.echo(f"registered product {record.id!r}")
    if data_file:
        load_with_progress(ctx, record.id, Path(data_file), owner, quiet=quiet)
    ctx.close()


def load_with_progress(
    ctx: CliContext, product_id: str, data_file: Path, owner: str, *, quiet: bool = False
) -> None:
    """Load rows with a progress bar per stage; audited as ``product.data``."""
    rt = ctx.runtime()
    fmt = DataFormat.from_name(data_file.name)
    target = {"product": product_id}
    with Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        disable=quiet,
        transient=False,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, fraction: float) -> None:
            if stage == "done":
                return
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=1.0)
                for other, tid in tasks.items():  # earlier stages are complete
                    if other != stage:
                        bar.update(tid, completed=1.0)
            bar.update(tasks[stage], completed=fraction)

        try:
            record = load_product_data(
                rt, product_id, data_file, fmt, owner, owner_only=False, progress=progress
            )
        except DomainError as exc:
            ctx.audit_local(
                "product.data",
                target,
                _argv(),
                None,
                decision="deny",
                reason=f"{exc.code}: {exc.message}",
            )
            raise
        for tid in tasks.values():
            bar.update(tid, completed=1.0)
    assert record.current is not None
    ctx.audit_local("product.data", target, _argv(), record.to_dict(include_counts=True))
    click.echo(
        f"loaded {record.current.row_count} rows into {product_id!r} version "
        f"{record.current.version} (sha256 {record.current.content_hash[:16]}…)"
    )


COMMANDS = [init, principals, products]

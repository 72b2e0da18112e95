"""Remote commands for sandbox model development and model products (DESIGN §7a, §11):
``sandbox synth``, ``sandbox train``, ``sandbox models publish|file|withdraw|list``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import click

from sandbox.cli.admin import read_document
from sandbox.cli.common import CliContext
from sandbox.cli.remote import client_options, fail, make_client
from sandbox.client import LONG_CALL_S, ApiError, Response


def _note(answer: Response) -> None:
    if answer.audit_index is not None:
        click.echo(f"# audit index {answer.audit_index}", err=True)


@click.command("synth")
@click.argument("product")
@click.option("--scope", required=True)
@click.option("--epsilon", required=True, type=str)
@click.option("--columns", required=True, help="Comma-separated column names.")
@click.option("--rows", required=True, type=int)
@click.option("--method", type=click.Choice(["mst", "aim"]), default=None)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="CSV to write.")
@click.option("--preview", is_flag=True, help="Cost and accuracy only; nothing is spent.")
@client_options
@click.pass_obj
def synth(
    ctx: CliContext,
    product: str,
    scope: str,
    epsilon: str,
    columns: str,
    rows: int,
    method: str | None,
    out: str,
    preview: bool,
    url: str | None,
    principal: str | None,
    key_file: str | None,
) -> None:
    """As an enterprise: DP synthetic rows of PRODUCT written to a CSV file."""
    client = make_client(ctx, url, principal, key_file, timeout=LONG_CALL_S + 30)
    ctx.on_close(client.close)
    names = [c.strip() for c in columns.split(",") if c.strip()]
    try:
        answer = client.synthetic(
            product, scope, epsilon, names, rows, method=method, preview=preview
        )
    except ApiError as exc:
        fail(exc)
        return
    _note(answer)
    if preview:
        click.echo(json.dumps(answer, ensure_ascii=False, indent=2))
        return
    with Path(out).open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(answer["columns"])
        writer.writerows(["" if v is None else v for v in row] for row in answer["rows"])
    click.echo(
        f"wrote {len(answer['rows'])} rows to {out}; epsilon spent {answer['epsilon_spent']}, "
        f"remaining {answer['budget']['remaining']}; release {answer['release']}"
    )
    click.echo(f"receipt: {answer['receipt']}", err=True)


@click.command("train")
@click.option("--scope", required=True)
@click.option("--product", required=True)
@click.option("--epsilon", required=True, type=str)
@click.option("--spec", "spec_file", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Model JSON to write.")
@click.option("--preview", is_flag=True, help="Cost and accuracy only; nothing is spent.")
@client_options
@click.pass_obj
def train(
    ctx: CliContext,
    scope: str,
    product: str,
    epsilon: str,
    spec_file: str,
    out: str,
    preview: bool,
    url: str | None,
    principal: str | None,
    key_file: str | None,
) -> None:
    """As an enterprise: train a DP model (SPEC: JSON or YAML) and write it to a file."""
    client = make_client(ctx, url, principal, key_file, timeout=LONG_CALL_S + 30)
    ctx.on_close(client.close)
    try:
        answer = client.train(
            scope, product, epsilon, read_document(Path(spec_file)), preview=preview
        )
    except ApiError as exc:
        fail(exc)
        return
    _note(answer)
    if preview:
        click.echo(json.dumps(answer, ensure_ascii=False, indent=2))
        return
    Path(out).write_text(json.dumps(answer["model"], ensure_ascii=False, indent=2) + "\n")
    click.echo(json.dumps(answer["metrics"], ensure_ascii=False, indent=2))
    click.echo(
        f"wrote the model to {out}; epsilon spent {answer['epsilon_spent']}; "
        f"release {answer['release']}"
    )


@click.group("models")
def models() -> None:
    """Model products and their filing (算法备案)."""


@models.command("publish")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@client_options
@click.pass_obj
def publish(
    ctx: CliContext, file: str, url: str | None, principal: str | None, key_file: str | None
) -> None:
    """As an operator: define a model product from FILE (a new definition is a draft)."""
    client = make_client(ctx, url, principal, key_file)
    ctx.on_close(client.close)
    try:
        answer = client.publish_model(read_document(Path(file)))
    except ApiError as exc:
        fail(exc)
        return
    _note(answer)
    state = "new draft" if answer["created"] else f"unchanged ({answer['status']})"
    click.echo(f"{answer['id']} version {answer['version']}: {state}")


def _transition(
    ctx: CliContext,
    event: str,
    model_product: str,
    version: str,
    note: str | None,
    url: str | None,
    principal: str | None,
    key_file: str | None,
) -> None:
    client = make_client(ctx, url, principal, key_file)
    ctx.on_close(client.close)
    try:
        if event == "file":
            answer = client.file_model(model_product, version, note)
        else:
            answer = client.withdraw_model(model_product, version, note)
    except ApiError as exc:
        fail(exc)
        return
    _note(answer)
    click.echo(f"{model_product} version {version}: {answer['status']}")


@models.command("file")
@click.argument("model_product")
@click.argument("version")
@click.option("--note", default=None)
@client_options
@click.pass_obj
def file_version(
    ctx: CliContext,
    model_product: str,
    version: str,
    note: str | None,
    url: str | None,
    principal: str | None,
    key_file: str | None,
) -> None:
    """As a regulator: file VERSION of MODEL_PRODUCT (from now on it scores)."""
    _transition(ctx, "file", model_product, version, note, url, principal, key_file)


@models.command("withdraw")
@click.argument("model_product")
@click.argument("version")
@click.option("--note", default=None)
@client_options
@click.pass_obj
def withdraw_version(
    ctx: CliContext,
    model_product: str,
    version: str,
    note: str | None,
    url: str | None,
    principal: str | None,
    key_file: str | None,
) -> None:
    """As an operator or regulator: withdraw VERSION of MODEL_PRODUCT."""
    _transition(ctx, "withdraw", model_product, version, note, url, principal, key_file)


@models.command("list")
@client_options
@click.pass_obj
def list_products(
    ctx: CliContext, url: str | None, principal: str | None, key_file: str | None
) -> None:
    """Model products with their versions (in full for operators and regulators)."""
    client = make_client(ctx, url, principal, key_file)
    ctx.on_close(client.close)
    try:
        answer = client.get("/v1/model-products")
    except ApiError as exc:
        fail(exc)
        return
    for mp in answer["model_products"]:
        current = mp["current_version"] or "none filed"
        click.echo(f"{mp['id']} on {mp['product']}: bands {mp['bands']}, current {current}")
        for v in mp.get("versions", []):
            click.echo(f"  {v['seq']:>3} {v['version']} {v['status']:<9} calls {v['calls']}")


COMMANDS = [synth, train, models]

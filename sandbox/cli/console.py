"""``sandbox console login|sign`` (DESIGN §12) and ``sandbox report`` (the annual
disclosure report, computed from the audit log alone)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sandbox import disclosure
from sandbox.actions.console import report_checkpoint
from sandbox.cli.common import CliContext
from sandbox.cli.remote import client_options, make_client
from sandbox.client import ApiError


@click.group("console")
def console() -> None:
    """Sign in to the web console without the private key leaving this machine."""


@console.command("login")
@client_options
@click.pass_obj
def login(ctx: CliContext, url: str | None, principal: str | None, key_file: str | None) -> None:
    """Print a single-use sign-in link: a one-time challenge from the service, signed
    here with your key. Open it in a browser within a few minutes."""
    client = make_client(ctx, url, principal, key_file)
    try:
        click.echo(client.console_link())
    except ApiError as exc:
        raise click.ClickException(f"{exc.status} {exc.code}: {exc.message}") from None
    finally:
        client.close()


@console.command("sign")
@client_options
@click.option("--challenge", required=True, help="The challenge shown on the sign-in page.")
@click.pass_obj
def sign(
    ctx: CliContext, url: str | None, principal: str | None, key_file: str | None, challenge: str
) -> None:
    """Sign a challenge shown on the sign-in page; paste the printed token there."""
    client = make_client(ctx, url, principal, key_file)
    try:
        click.echo(client.console_token(challenge.strip()))
    finally:
        client.close()


@click.command("report")
@click.option("--year", type=click.IntRange(2000, 9999), required=True)
@click.option("--format", "fmt", type=click.Choice(["html", "json"]), default="json")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="File (default stdout).")
@click.option(
    "--bundle",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Recompute from an exported bundle of the whole log instead of the store "
    "(verify it first with 'sandbox audit verify').",
)
@click.pass_obj
def report(ctx: CliContext, year: int, fmt: str, out: str | None, bundle: str | None) -> None:
    """The operator's annual public disclosure report (DESIGN §12), from the audit log
    alone: products and versions, scopes by purpose, calls and refusals by product and
    operation, budget spent, suspensions; it names the checkpoint it covers. Computed
    from the store this is an audited local command (``report.compute``)."""
    if bundle is not None:
        rep = disclosure.compute_from_bundle(Path(bundle), year)
    else:
        rt = ctx.runtime()
        pending, holder = report_checkpoint("report.compute", year)
        ctx.call(pending)
        rep = disclosure.compute_from_log(rt, year, holder[0])
    text = (
        disclosure.to_html(rep)
        if fmt == "html"
        else json.dumps(rep, ensure_ascii=False, indent=2) + "\n"
    )
    if out is None:
        click.echo(text, nl=False)
    else:
        Path(out).write_text(text, encoding="utf-8")


COMMANDS = [console, report]

"""Commands that talk to a running service as a principal: ``call``, ``scopes apply``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from policies.files import load_policy_file, plan
from products.errors import InvalidRequest
from sandbox.cli.common import CliContext
from sandbox.client import ApiError, Client


def client_options(f: Any) -> Any:
    f = click.option(
        "--key",
        "key_file",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="Private key PEM (default $SANDBOX_KEY_FILE).",
    )(f)
    f = click.option(
        "--id", "principal", default=None, help="Principal id (default $SANDBOX_PRINCIPAL)."
    )(f)
    f = click.option(
        "--url",
        default=None,
        help="Service URL (default $SANDBOX_API_URL, else http://127.0.0.1:8000).",
    )(f)
    return f


def make_client(
    ctx: CliContext,
    url: str | None,
    principal: str | None,
    key_file: str | None,
    *,
    timeout: float = 60.0,
) -> Client:
    s = ctx.settings
    pid = principal or s.principal
    key = Path(key_file) if key_file else s.key_file
    if not pid or key is None:
        raise InvalidRequest("give --id and --key (or $SANDBOX_PRINCIPAL and $SANDBOX_KEY_FILE)")
    try:
        return Client(url or s.api_url, pid, key.read_bytes(), audience=s.audience, timeout=timeout)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def fail(exc: ApiError) -> None:
    index = f" (audit index {exc.audit_index})" if exc.audit_index is not None else ""
    raise click.ClickException(f"{exc.status} {exc.code}: {exc.message}{index}")


@click.command("call")
@click.argument("method", type=click.Choice(["GET", "POST", "PUT"], case_sensitive=False))
@click.argument("path")
@click.option(
    "--json",
    "json_file",
    type=click.Path(exists=True, dir_okay=False),
    help="JSON body ('-' not supported; write it to a file).",
)
@click.option(
    "--table",
    is_flag=True,
    help="Print a DP answer as a table, each value with its 95% interval (± ci95).",
)
@client_options
@click.pass_obj
def call(
    ctx: CliContext,
    method: str,
    path: str,
    json_file: str | None,
    table: bool,
    url: str | None,
    principal: str | None,
    key_file: str | None,
) -> None:
    """Send one signed call and print the JSON answer (for operators' scripts)."""
    client = make_client(ctx, url, principal, key_file)
    ctx.on_close(client.close)
    body = None
    if json_file:
        try:
            body = json.loads(Path(json_file).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:  # ValueError: JSON, huge integers
            raise InvalidRequest(f"{json_file} is not JSON: {exc}") from None
        except RecursionError:
            raise InvalidRequest(f"{json_file} nests too deeply") from None
    try:
        answer = client.request(method.upper(), path, json_body=body)
    except ApiError as exc:
        click.echo(
            json.dumps(
                {"error": {"code": exc.code, "message": exc.message, "details": exc.details}},
                ensure_ascii=False,
            ),
            err=True,
        )
        fail(exc)
        return
    if table and isinstance(answer.get("rows"), list):
        click.echo(answer_table(answer))
    else:
        click.echo(json.dumps(answer, ensure_ascii=False, indent=2))
    if answer.audit_index is not None:
        click.echo(f"# audit index {answer.audit_index}", err=True)


@click.group("scopes")
def scopes() -> None:
    """Scopes kept as YAML policy files."""


@scopes.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@client_options
@click.pass_obj
def apply(
    ctx: CliContext,
    file: str,
    dry_run: bool,
    url: str | None,
    principal: str | None,
    key_file: str | None,
) -> None:
    """Make the service's scopes match FILE (idempotent); prints the plan first."""
    desired = load_policy_file(Path(file).read_text(encoding="utf-8"))
    client = make_client(ctx, url, principal, key_file)
    ctx.on_close(client.close)
    try:
        current = {s["id"]: s for s in client.get("/v1/scopes")["scopes"]}
    except ApiError as exc:
        fail(exc)
        return
    steps = plan(desired, current)
    for step in steps:
        click.echo(step.describe())
    conflicts = [s for s in steps if s.action == "conflict"]
    if dry_run:
        click.echo("dry run: nothing changed")
    else:
        for step in steps:
            try:
                if step.action == "grant":
                    client.post("/v1/scopes", step.body)
                elif step.action in ("suspend", "resume", "revoke"):
                    client.post(
                        f"/v1/scopes/{step.scope}/{step.action}",
                        {"reason": f"policy file {Path(file).name}"},
                    )
            except ApiError as exc:
                fail(exc)
        changed = sum(s.action not in ("unchanged", "conflict") for s in steps)
        click.echo(f"applied: {changed} change(s)")
    if conflicts:
        raise click.ClickException(f"{len(conflicts)} scope(s) conflict with the file")


COMMANDS = [call, scopes]


def answer_table(answer: Any) -> str:
    """A DP answer as text: one line per row, every released value with ``± ci95`` (its
    95% half-width), then the epsilon spent and the budget left."""
    columns: list[str] = list(answer["columns"])
    ci: dict[str, Any] = {}
    for acc in answer.get("accuracy", []):
        ci[acc["column"]] = acc.get("ci95_rows") or acc.get("ci95")
    lines = []
    for r, row in enumerate(answer["rows"]):
        cells = []
        for name, value in zip(columns, row, strict=True):
            half = ci.get(name)
            if isinstance(half, list):
                half = half[r] if r < len(half) else None
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if numeric and isinstance(half, int | float):
                cells.append(f"{name}={_num(float(value))} ± {_num(float(half))}")
            else:
                cells.append(f"{name}={value}")
        lines.append("  ".join(cells))
    budget = answer.get("budget", {})
    lines.append(
        f"# epsilon spent {answer.get('epsilon_spent')}; budget left {budget.get('remaining')} "
        f"of {budget.get('epsilon')}; ± is the 95% half-width of the noise"
    )
    return "\n".join(lines)


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"

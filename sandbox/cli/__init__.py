"""The ``sandbox`` command line (DESIGN §7a).

Global options come before the subcommand (``sandbox --data-dir DIR init``). Every
error is one readable line on stderr and a non-zero exit; never a traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from audit.errors import AuditError
from products.errors import DomainError
from sandbox.cli.common import CliContext
from sandbox.settings import Settings


class SandboxGroup(click.Group):
    """A click group that turns domain errors into one line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DomainError as exc:
            click.echo(f"error: {exc.code}: {exc.message}{_details(exc)}", err=True)
            sys.exit(1)
        except AuditError as exc:  # e.g. an unreadable witness state or bundle
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)
        except OSError as exc:
            click.echo(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
            sys.exit(1)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            # The last guard: one line, never a traceback (unless asked for).
            if os.environ.get("SANDBOX_TRACEBACK"):
                raise
            text = (str(exc).strip().splitlines() or [""])[0][:300]
            click.echo(
                f"error: unexpected {type(exc).__name__}: {text} (SANDBOX_TRACEBACK=1 shows where)",
                err=True,
            )
            sys.exit(1)


def _details(exc: DomainError) -> str:
    d = exc.details
    if "first_rejections" in d:
        first = d["first_rejections"][:5]
        where = "; ".join(f"line {r['line']} {r['column']}: {r['rule']}" for r in first)
        return f" ({where})"
    if "fields" in d:
        return f" {d['fields']}"
    return ""


@click.group(cls=SandboxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Data directory (default $SANDBOX_DATA_DIR, else ./var).",
)
@click.option(
    "--database-url",
    default=None,
    help="Control-plane store URL (default $SANDBOX_DATABASE_URL, else SQLite "
    "inside the data dir), e.g. postgresql+psycopg://user@host/db.",
)
@click.option(
    "--audience",
    default=None,
    help="Audience signed calls must carry (default $SANDBOX_AUDIENCE, else public-data-sandbox).",
)
@click.version_option(package_name="public-data-sandbox", prog_name="sandbox")
@click.pass_context
def main(
    ctx: click.Context, data_dir: str | None, database_url: str | None, audience: str | None
) -> None:
    """Public-data authorised-operation sandbox: DP statistics and yes/no verification
    over public data, every call signed and audited.

    \b
    Start here:
      sandbox demo             set up demo data, principals, keys and scopes
      sandbox serve            run the API on http://127.0.0.1:8000/v1/docs
    """
    from pathlib import Path

    settings = Settings.from_env(
        data_dir=Path(data_dir) if data_dir else None,
        database_url=database_url,
        audience=audience,
    )
    ctx.obj = CliContext(settings)
    ctx.call_on_close(ctx.obj.close)


def _register() -> None:
    from sandbox.cli import admin, audit, console, demo, keys, models, remote, serve

    for module in (admin, keys, serve, demo, audit, remote, models, console):
        for command in module.COMMANDS:
            main.add_command(command)


_register()

"""``sandbox serve``: the development server (production: gunicorn on the app factory)."""

from __future__ import annotations

import click

from sandbox.cli.common import CliContext


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.pass_obj
def serve(ctx: CliContext, host: str, port: int) -> None:
    """Run the API with the development server.

    For production use gunicorn with threads, e.g.
    gunicorn -w 2 -k gthread --threads 8 'sandbox.app:create_app()'
    """
    from sandbox.app import create_app

    app = create_app(runtime=ctx.runtime(create=True))
    click.echo(f"serving on http://{host}:{port}/v1/  (docs: http://{host}:{port}/v1/docs)")
    app.run(host=host, port=port, threaded=True, use_reloader=False)


COMMANDS = [serve]

"""``sandbox keys generate``: key pairs for principals."""

from __future__ import annotations

import os
from pathlib import Path

import click

from policies.principals import generate_keypair, jwk_thumbprint
from sandbox.actions import platform
from sandbox.cli.common import CliContext
from sandbox.platform_keys import PlatformKeys


@click.group("keys")
def keys() -> None:
    """Key pairs for signing calls (Ed25519 by default; ES256 and SM2 accepted)."""


@keys.command("generate")
@click.option(
    "--out",
    "prefix",
    required=True,
    type=click.Path(dir_okay=False),
    help="Write PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (SPKI PEM).",
)
@click.option(
    "--alg",
    type=click.Choice(["ed25519", "es256", "sm2"]),
    default="ed25519",
    show_default=True,
    help="sm2: GB/T 32918 SM2 with SM3, JWS alg SM2SM3 (DESIGN §13).",
)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def generate(prefix: str, alg: str, force: bool) -> None:
    """Generate a key pair and print its kid (RFC 7638 thumbprint)."""
    private_pem, public_pem = generate_keypair(alg)
    key_path, pub_path = Path(prefix + ".key"), Path(prefix + ".pub")
    if not force and (key_path.exists() or pub_path.exists()):
        raise click.ClickException(f"{key_path} or {pub_path} exists (use --force)")
    key_path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(key_path, flags, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    os.chmod(key_path, 0o600)
    pub_path.write_bytes(public_pem)
    click.echo(f"wrote {key_path} and {pub_path}; kid {jwk_thumbprint(public_pem)}")


@keys.command("rotate")
@click.pass_obj
def rotate(ctx: CliContext) -> None:
    """Make a new platform signing key current (receipts and checkpoints).

    Old public keys stay published in /v1/keys and in bundle headers, so receipts
    and checkpoints signed before the rotation still verify. Restart the servers.
    """
    rt = ctx.runtime()
    old = rt.keys.current.kid
    pending, private_pem, public_pem = platform.rotate_key(rt)
    ctx.call(pending)
    kid = PlatformKeys.install(ctx.settings.keys_dir, private_pem, public_pem)
    ctx.close()
    click.echo(f"platform key rotated: {old} -> {kid} (restart the servers to sign with it)")


COMMANDS = [keys]

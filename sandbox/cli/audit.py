"""``sandbox audit export | verify | witness``."""

from __future__ import annotations

import base64
import sys
import time
from pathlib import Path

import click

from audit.errors import AuditError
from audit.note import (
    CosignatureSigner,
    cosignature_verifier_from_vkey,
    note_verifier,
    note_verifier_from_vkey,
)
from audit.suites import DEFAULT_SUITE
from audit.verify import verify_bundle
from audit.witness import load_state, save_state, witness_checkpoint
from policies.sm2 import SM2PrivateKey, is_sm2_pem
from sandbox.actions import audit_access
from sandbox.cli.common import CliContext
from sandbox.cli.remote import make_client
from sandbox.client import ApiError


@click.group("audit")
def audit() -> None:
    """The tamper-evident audit log: bundles, offline verification, witnessing."""


@audit.command("export")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Bundle file to write (JSON Lines).",
)
@click.option("--start", type=int, default=0, show_default=True)
@click.option("--end", type=int, default=None, help="Default: the current tree size.")
@click.pass_obj
def export(ctx: CliContext, out: str, start: int, end: int | None) -> None:
    """Write an audit bundle of entries START ≤ i < END (audited as audit.export)."""
    rt = ctx.runtime()
    pending, last = audit_access.export(rt, start, end)
    ctx.call(pending)
    keys, witnesses = rt.bundle_keys()
    path = Path(out)
    tmp = path.with_name(path.name + ".partial")
    try:
        with tmp.open("wb") as f:
            rt.audit.export(f, start=start, end=last, keys=keys, witnesses=witnesses)
        tmp.replace(path)
    except AuditError as exc:
        tmp.unlink(missing_ok=True)
        raise click.ClickException(exc.message) from None
    finally:
        tmp.unlink(missing_ok=True)
    click.echo(f"wrote entries [{start}, {last}) to {path}")
    ctx.close()


@audit.command("verify")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--key",
    "vkeys",
    multiple=True,
    help="Trust only this log key (C2SP vkey); default: the bundle's header keys.",
)
@click.option("--witness", "witnesses", multiple=True, help="A witness vkey to report on.")
def verify(bundle: str, vkeys: tuple[str, ...], witnesses: tuple[str, ...]) -> None:
    """Verify a bundle offline: every leaf, the root, the checkpoint signatures.

    Exit status 0 only if every check passes. Needs only the ``audit`` package.
    """
    try:
        trusted = [note_verifier_from_vkey(v) for v in vkeys] or None
        report = verify_bundle(
            bundle,
            trusted_keys=trusted,
            witnesses=[cosignature_verifier_from_vkey(w) for w in witnesses],
        )
    except AuditError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(report.summary())
    if not report.ok:
        sys.exit(1)


@audit.command("witness")
@click.option("--url", required=True, help="The platform's URL.")
@click.option(
    "--id",
    "principal",
    required=True,
    help="Your regulator principal id (also the witness key name).",
)
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Your Ed25519 or SM2 private key (PKCS#8 PEM).",
)
@click.option(
    "--state",
    "state_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where the last witnessed checkpoint is kept (default ./witness-<id>.json).",
)
@click.pass_obj
def witness(
    ctx: CliContext, url: str, principal: str, key_file: str, state_file: str | None
) -> None:
    """As a regulator: fetch the latest checkpoint, check it is consistent with the last
    one witnessed, cosign it (C2SP tlog-cosignature) and post the cosignature."""
    client = make_client(ctx, url, principal, key_file)
    ctx.on_close(client.close)
    state_path = Path(state_file or f"witness-{principal}.json")
    state = load_state(state_path)
    try:
        cp = client.get("/v1/audit/checkpoint")
        jwks = client.jwks()
        # The suite (DESIGN §13) is pinned in the witness state at the first cosignature:
        # a platform that later claims another hash is refused, not followed.
        suite = str(jwks.get("suite", DEFAULT_SUITE))
        log_keys = [note_verifier(k) for k in jwks["keys"] if k.get("crv") in ("Ed25519", "SM2")]
        proof: list[bytes] = []
        if state is not None and 0 < state.size < int(cp["tree_size"]):
            got = client.get(
                "/v1/audit/proofs/consistency", first=state.size, second=cp["tree_size"]
            )
            proof = [base64.b64decode(p) for p in got["proof"]]
        key_pem = Path(key_file).read_bytes()
        cosigner = (
            CosignatureSigner(SM2PrivateKey.from_pem(key_pem), name=principal)
            if is_sm2_pem(key_pem)
            else CosignatureSigner.from_pem(key_pem, name=principal)
        )
        witnessed = witness_checkpoint(
            cp["note"],
            log_keys=log_keys,
            cosigner=cosigner,
            state=state,
            proof=proof,
            now=int(time.time()),
            suite=suite,
        )
        stored = client.post("/v1/audit/cosignatures", {"note": witnessed.note})
    except ApiError as exc:
        raise click.ClickException(f"{exc.status} {exc.code}: {exc.message}") from None
    except AuditError as exc:
        raise click.ClickException(f"refusing to cosign: {exc.message}") from None
    save_state(state_path, witnessed.state)
    previous = f" (consistent with size {state.size})" if state else " (first checkpoint)"
    kept = (
        ""
        if stored.get("created", True)
        else "; the platform kept this witness's earlier cosignature of it"
    )
    click.echo(f"cosigned checkpoint of size {witnessed.checkpoint.size}{previous}{kept}")


COMMANDS = [audit]

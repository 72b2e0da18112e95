"""The platform's own key: rotation (a local operator command)."""

from __future__ import annotations

from policies.principals import generate_keypair, jwk_thumbprint
from sandbox.actions.call import Answer, Pending
from sandbox.platform_keys import key_alg_for
from sandbox.runtime import Runtime


def rotate_key(rt: Runtime) -> tuple[Pending, bytes, bytes]:
    """``platform.key_rotate``: a new signing key for receipts and checkpoints.

    The key pair is made in memory; the caller installs it
    (``PlatformKeys.install``) once this call's entry is committed, so the log names
    every key before it signs anything, and a refused call leaves no key behind.
    Returns the call and the new private and public keys (PEM).
    """
    private_pem, public_pem = generate_keypair(key_alg_for(rt.suite))
    body = {"old": rt.keys.current.kid, "new": jwk_thumbprint(public_pem)}
    return Pending("platform.key_rotate", answer=Answer(body)), private_pem, public_pem

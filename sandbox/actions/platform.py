"""The platform's own key: rotation (a local operator command)."""

from __future__ import annotations

from sandbox.actions.call import Answer, Pending
from sandbox.platform_keys import PlatformKeys
from sandbox.runtime import Runtime


def rotate_key(rt: Runtime) -> tuple[Pending, str]:
    """``platform.key_rotate``: a new signing key for receipts and checkpoints.

    The key is created first, not yet current; the caller makes it current
    (``PlatformKeys.make_current``) once this call's entry is committed, so the log
    records every key before it signs anything. Returns the call and the new kid.
    """
    old = rt.keys.current.kid
    kid = PlatformKeys.create(rt.settings.keys_dir)
    body = {"old": old, "new": kid}
    return Pending("platform.key_rotate", answer=Answer(body)), kid

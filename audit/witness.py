"""Pure witness logic (DESIGN §7): check a new checkpoint against the last one seen and
cosign it (C2SP tlog-cosignature v1). The HTTP exchange lives in ``sandbox``.

A witness keeps ``(origin, size, root)`` of the last checkpoint it cosigned. It cosigns a
new checkpoint only if the log's signature verifies and the new tree is consistent with
the old one (an RFC 9162 consistency proof), so two different histories shown to two
parties cannot both collect its cosignature.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from audit.errors import AuditError, BadCheckpoint, BadProof
from audit.merkle import verify_consistency
from audit.note import Checkpoint, CosignatureSigner, NoteVerifier, open_checkpoint
from audit.suites import DEFAULT_SUITE, suite_named

__all__ = ["WitnessState", "Witnessed", "load_state", "save_state", "witness_checkpoint"]


@dataclass(frozen=True)
class WitnessState:
    """The last checkpoint a witness cosigned: origin, tree size and root hash, and the
    log's cryptographic suite (DESIGN §13), pinned at the first cosignature."""

    origin: str
    size: int
    root: bytes
    suite: str = DEFAULT_SUITE

    def to_json(self) -> str:
        """Return the state as a JSON document."""
        root = base64.b64encode(self.root).decode()
        obj = {"origin": self.origin, "size": self.size, "root": root, "suite": self.suite}
        return json.dumps(obj) + "\n"

    @classmethod
    def from_json(cls, text: str) -> WitnessState:
        """Parse :meth:`to_json` output (a state without ``suite`` is
        ``ed25519-sha256``); raises :class:`BadCheckpoint`."""
        try:
            obj = json.loads(text)
            state = cls(
                str(obj["origin"]),
                int(obj["size"]),
                base64.b64decode(obj["root"]),
                str(obj.get("suite", DEFAULT_SUITE)),
            )
            suite_named(state.suite)
        except AuditError as exc:
            raise BadCheckpoint(f"witness state is unreadable: {exc.message}") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BadCheckpoint(f"witness state is unreadable: {exc}") from exc
        if state.size < 0 or len(state.root) != 32:
            raise BadCheckpoint("witness state has a bad size or root")
        return state


@dataclass(frozen=True)
class Witnessed:
    """A cosigned checkpoint: the parsed checkpoint, the cosignature line (no newline),
    the note with the line appended, and the state to save."""

    checkpoint: Checkpoint
    line: str
    note: str
    state: WitnessState


def load_state(path: str | os.PathLike[str]) -> WitnessState | None:
    """Return the saved state, or ``None`` if the file does not exist."""
    try:
        return WitnessState.from_json(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def save_state(path: str | os.PathLike[str], state: WitnessState) -> None:
    """Write the state atomically (temporary file, fsync, rename)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".witness-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(state.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def witness_checkpoint(
    note: str,
    *,
    log_keys: Sequence[NoteVerifier],
    cosigner: CosignatureSigner,
    state: WitnessState | None,
    proof: Sequence[bytes],
    now: int,
    origin: str | None = None,
    suite: str = DEFAULT_SUITE,
) -> Witnessed:
    """Verify ``note`` against the previous ``state`` and cosign it at POSIX time ``now``.

    ``proof`` is the consistency proof from ``state.size`` to the new size (ignored when
    there is no state or the state is the empty tree), checked with the hash of
    ``suite``, which must be the state's. Raises :class:`BadCheckpoint` (bad signature,
    other origin, other suite) or :class:`BadProof` (rollback, fork, bad proof);
    nothing is cosigned then.
    """
    if state is not None and state.suite != suite:
        raise BadCheckpoint(
            f"the log's suite is {state.suite} in the witness state, not {suite}: "
            "a deployment never changes suite"
        )
    try:
        th = suite_named(suite).tree
    except AuditError as exc:
        raise BadCheckpoint(exc.message) from exc
    expected_origin = state.origin if state is not None else origin
    cp, parsed = open_checkpoint(note, log_keys, origin=expected_origin)
    if state is not None and state.size > 0:
        if cp.size < state.size:
            raise BadProof(f"the log shrank from {state.size} to {cp.size}")
        if cp.size == state.size:
            if cp.root != state.root:
                raise BadProof("same tree size, different root: the log forked")
        else:
            verify_consistency(state.size, cp.size, state.root, cp.root, proof, th=th)
    sig = cosigner.sign(parsed.text, now)
    cosigned = parsed.with_signatures([sig])
    return Witnessed(
        cp,
        sig.line().rstrip("\n"),
        str(cosigned),
        WitnessState(cp.origin, cp.size, cp.root, suite),
    )

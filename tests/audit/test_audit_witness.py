"""Witness logic: cosign only consistent growth; state survives in a file."""

from __future__ import annotations

from pathlib import Path

import pytest
from audit_helpers import in_entry, make_entry, new_log, sqlite_url

from audit.errors import BadCheckpoint, BadProof
from audit.log import AuditLog
from audit.note import CosignatureSigner, NoteSigner, open_note
from audit.witness import load_state, save_state, witness_checkpoint


def test_witness_follows_a_growing_log(tmp_path: Path, signer: NoteSigner) -> None:
    log = new_log(sqlite_url(tmp_path), signer)
    assert isinstance(log, AuditLog)
    me = CosignatureSigner.generate("regulator.example/w")
    state_file = tmp_path / "witness.json"
    assert load_state(state_file) is None
    for round_, n in enumerate((3, 4, 0, 9)):
        for i in range(n):
            log.append(make_entry(i))
        cp = log.checkpoint()
        state = load_state(state_file)
        proof = (
            log.consistency_proof(state.size, cp.size).proof
            if state is not None and 0 < state.size < cp.size
            else []
        )
        done = witness_checkpoint(
            cp.note,
            log_keys=[signer.verifier()],
            cosigner=me,
            state=state,
            proof=proof,
            now=1_790_000_000 + round_,
        )
        save_state(state_file, done.state)
        open_note(done.note, [me.verifier()])
        in_entry(log, lambda tx, note=done.note: tx.add_cosignature(note, me.verifier()))
    final = load_state(state_file)
    assert final is not None and final.size == cp.size and final.root == log.root(cp.size)


def test_witness_refuses_forks_rollbacks_and_bad_proofs(tmp_path: Path, signer: NoteSigner) -> None:
    a = new_log(sqlite_url(tmp_path), signer)
    (tmp_path / "b").mkdir()
    b = new_log(sqlite_url(tmp_path / "b"), signer)
    assert isinstance(a, AuditLog) and isinstance(b, AuditLog)
    me = CosignatureSigner.generate("w")
    for i in range(5):
        a.append(make_entry(i))
        b.append(make_entry(i, reason="other history"))
    keys = [signer.verifier()]
    first = witness_checkpoint(
        a.checkpoint().note, log_keys=keys, cosigner=me, state=None, proof=[], now=1
    )
    fork = b.checkpoint().note  # same size, other root
    with pytest.raises(BadProof, match="forked"):
        witness_checkpoint(fork, log_keys=keys, cosigner=me, state=first.state, proof=[], now=2)
    for i in range(5, 9):
        a.append(make_entry(i))
        b.append(make_entry(i))
    grown = a.checkpoint().note
    wrong = b.consistency_proof(5, 9).proof
    with pytest.raises(BadProof):
        witness_checkpoint(grown, log_keys=keys, cosigner=me, state=first.state, proof=wrong, now=3)
    ok = witness_checkpoint(
        grown,
        log_keys=keys,
        cosigner=me,
        state=first.state,
        proof=a.consistency_proof(5, 9).proof,
        now=3,
    )
    old = a.checkpoint_at(5)
    assert old is not None
    with pytest.raises(BadProof, match="shrank"):
        witness_checkpoint(old.note, log_keys=keys, cosigner=me, state=ok.state, proof=[], now=4)
    with pytest.raises(BadCheckpoint):
        witness_checkpoint(
            grown,
            log_keys=[NoteSigner.generate(signer.name).verifier()],
            cosigner=me,
            state=None,
            proof=[],
            now=5,
        )

"""The reference verifier (audit/reference.py) and the fast one (audit/verify.py) agree on
every bundle: exported ranges of a real log, untouched or tampered with at random."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from audit_helpers import make_entry, new_log, sqlite_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import merkle, reference
from audit.log import AuditLog
from audit.note import NoteSigner
from audit.verify import verify_bundle
from tests.audit.test_audit_merkle import RFC6962_LEAVES, RFC6962_ROOTS

SIZE = 40


@pytest.fixture(scope="module")
def signed_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditLog]:
    d = tmp_path_factory.mktemp("reference")
    log = new_log(sqlite_url(d), NoteSigner.generate("public-data-sandbox/audit"))
    assert isinstance(log, AuditLog)
    log.checkpoint()  # of the empty tree
    for i in range(SIZE):
        log.append(make_entry(i))  # type: ignore[arg-type]
        log.checkpoint()  # one of every size, so any range can be exported
    yield log
    log.close()


def tamper(lines: list[bytes], how: str, where: int) -> list[bytes]:
    entries = [i for i, line in enumerate(lines) if b'"type":"entry"' in line]
    if how == "none" or not entries:
        return lines
    out = list(lines)
    i = entries[where % len(entries)]
    record = json.loads(out[i])
    if how == "leaf":
        leaf = bytearray(base64.b64decode(record["leaf"]))
        leaf[where % len(leaf)] ^= 1 << (where % 7)
        record["leaf"] = base64.b64encode(bytes(leaf)).decode()
        out[i] = json.dumps(record, separators=(",", ":")).encode()
    elif how == "drop":
        del out[i]
    elif how == "duplicate":
        out.insert(i, out[i])
    elif how == "swap" and len(entries) > 1:
        j = entries[(where + 1) % len(entries)]
        out[i], out[j] = out[j], out[i]
    elif how == "reindex":
        leaf = json.loads(base64.b64decode(record["leaf"]))
        leaf["index"] += 1
        record["leaf"] = base64.b64encode(json.dumps(leaf).encode()).decode()
        out[i] = json.dumps(record, separators=(",", ":")).encode()
    elif how == "root":
        for k, line in enumerate(out):
            if b'"type":"checkpoint"' in line:
                note = json.loads(line)["note"]
                body = note.split("\n")
                body[2] = base64.b64encode(bytes(32)).decode()
                out[k] = json.dumps({"type": "checkpoint", "note": "\n".join(body)}).encode()
    elif how == "prefix":
        for k, line in enumerate(out):
            if b'"type":"prefix"' in line:
                prefix = json.loads(line)
                prefix["hashes"][0] = base64.b64encode(bytes(32)).decode()
                out[k] = json.dumps(prefix).encode()
    return out


@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start=st.integers(0, SIZE),
    length=st.integers(0, SIZE),
    how=st.sampled_from(
        ["none", "none", "leaf", "drop", "duplicate", "swap", "reindex", "root", "prefix"]
    ),
    where=st.integers(0, 1000),
)
def test_both_verifiers_agree(
    signed_log: AuditLog, tmp_path: Path, start: int, length: int, how: str, where: int
) -> None:
    end = min(SIZE, start + length)
    path = tmp_path / f"b-{start}-{end}-{how}-{where}.jsonl"
    with path.open("wb") as f:
        signed_log.export(f, start=start, end=end)
    path.write_bytes(b"\n".join(tamper(path.read_bytes().splitlines(), how, where)) + b"\n")
    assert signed_log.signer is not None
    key = signed_log.signer.public_jwk()
    trusted = {key["name"]: base64.urlsafe_b64decode(key["x"] + "==")}
    fast = verify_bundle(path, trusted_keys=[signed_log.signer.verifier()])
    assert reference.verify(path, trusted) == fast.ok, (how, start, end, fast.errors)
    if how == "none":
        assert fast.ok


def test_the_reference_tree_hash_is_rfc_9162() -> None:
    # The RFC 6962 reference tree (the same the fast code is checked on), whole and from
    # every prefix of perfect subtrees.
    leaves = [bytes.fromhex(x) for x in RFC6962_LEAVES]
    hashes = [reference.leaf_hash(x) for x in leaves]
    for size, root in enumerate(RFC6962_ROOTS):
        assert reference.tree_hash(hashes[:size]) == bytes.fromhex(root)
        for start in range(1, size + 1):
            prefix = [
                reference.tree_hash(hashes[idx << level : (idx + 1) << level])
                for level, idx in merkle.perfect_subtrees(0, start)
            ]
            got = reference.root_with_prefix(prefix, start, hashes[start:size])
            assert got == bytes.fromhex(root), (size, start)

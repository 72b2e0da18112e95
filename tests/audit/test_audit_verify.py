"""The offline verifier: every tampering is detected and the first bad index named.

"First bad index" is the first position at which the bundle's entries differ from the
log's (DESIGN §7): what is there is altered, inserted, out of place or missing. The tests
compute it from the original and tampered lines and compare with the report.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from audit_helpers import checkpoint_now, in_entry, make_entry, new_log, sqlite_url

from audit import canonical, verify_bundle
from audit.errors import BadCheckpoint, MalformedBundle, TamperDetected
from audit.log import AuditLog
from audit.note import CosignatureSigner, NoteSigner, NoteVerifier

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle_log(tmp_path_factory: pytest.TempPathFactory) -> AuditLog:
    d = tmp_path_factory.mktemp("verify")
    log = new_log(sqlite_url(d), NoteSigner.generate("public-data-sandbox/audit"))
    assert isinstance(log, AuditLog)
    for i in range(8):
        log.append(make_entry(i))
    return log


def export(log: AuditLog, path: Path, start: int = 0, end: int | None = None) -> bytes:
    if end is None:
        end = log.size()
    if log.checkpoint_at(end) is None:
        if end == log.size():
            log.checkpoint()
        else:
            checkpoint_now(log, end)
    with path.open("wb") as f:
        log.export(f, start=start, end=end)
    return path.read_bytes()


def split(data: bytes) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(head lines, entry lines, checkpoint lines) of a bundle."""
    lines = data.splitlines(keepends=True)
    head = [ln for ln in lines if b'"type":"header"' in ln or b'"type":"prefix"' in ln]
    entries = [ln for ln in lines if ln.startswith(b'{"type":"entry"')]
    tail = lines[len(head) + len(entries) :]
    return head, entries, tail


def first_diff(orig: list[bytes], new: list[bytes]) -> int:
    for p, (a, b) in enumerate(zip(orig, new, strict=False)):
        if a != b:
            return p
    return min(len(orig), len(new))


def check(path: Path, data: bytes, start: int, want: int) -> None:
    path.write_bytes(data)
    report = verify_bundle(path)
    assert not report.ok
    assert report.first_bad_index == want, report.errors
    with pytest.raises(TamperDetected) as info:
        report.raise_for_errors()
    assert info.value.index == want


def test_genuine_bundles_verify(bundle_log: AuditLog, tmp_path: Path) -> None:
    for start, end in [(0, 8), (0, 0), (3, 8), (5, 6), (4, 4), (1, 7)]:
        p = tmp_path / f"b{start}-{end}.jsonl"
        export(bundle_log, p, start, end)
        report = verify_bundle(p)
        assert report.ok, (start, end, report.errors)
        assert (report.start, report.end, report.entries) == (start, end, end - start)
    report = verify_bundle(tmp_path / "b0-8.jsonl")
    assert report.actors == [f"ent-{i}" for i in range(5)]
    assert report.denials == 1 and report.first_time and report.last_time
    assert report.summary().startswith("OK: 8 entries")


@pytest.mark.parametrize("start", [0, 3])
def test_every_single_byte_mutation_of_an_entry_is_located(
    bundle_log: AuditLog, tmp_path: Path, start: int
) -> None:
    data = export(bundle_log, tmp_path / "orig.jsonl", start, 8)
    head, entries, tail = split(data)
    target = tmp_path / "t.jsonl"
    for pos in sorted({0, 1, len(entries) - 1}):
        line = entries[pos]
        for i in range(len(line)):
            for flip in (0x01, 0x20):
                bad = bytearray(line)
                bad[i] ^= flip
                if bad == line:
                    continue
                new = [*entries[:pos], bytes(bad), *entries[pos + 1 :]]
                check(target, b"".join(head + new + tail), start, start + pos)


def test_leaf_content_mutation_in_the_middle(bundle_log: AuditLog, tmp_path: Path) -> None:
    data = export(bundle_log, tmp_path / "orig.jsonl")
    head, entries, tail = split(data)
    for pos in range(len(entries)):
        obj = json.loads(entries[pos])
        leaf = json.loads(base64.b64decode(obj["leaf"]))
        for field, value in (("actor", "ent-evil"), ("decision", "allow"), ("epsilon", "9")):
            if leaf[field] == value:
                continue
            forged = canonical.encode(leaf | {field: value})
            line = b'{"type":"entry","index":%d,"leaf":"%s"}\n' % (pos, base64.b64encode(forged))
            new = [*entries[:pos], line, *entries[pos + 1 :]]
            check(tmp_path / "t.jsonl", b"".join(head + new + tail), 0, pos)


def test_deletion_insertion_reordering_truncation(bundle_log: AuditLog, tmp_path: Path) -> None:
    data = export(bundle_log, tmp_path / "orig.jsonl", 2, 8)
    head, entries, tail = split(data)
    n, start = len(entries), 2
    cases: list[list[bytes]] = []
    for k in range(n):
        cases.append(entries[:k] + entries[k + 1 :])  # deletion
        for j in range(n):
            cases.append([*entries[:k], entries[j], *entries[k:]])  # insertion of a copy
            if j > k:
                swapped = list(entries)
                swapped[k], swapped[j] = swapped[j], swapped[k]
                cases.append(swapped)  # reordering
        moved = list(entries)
        moved.insert(n - 1, moved.pop(k))
        if moved != entries:
            cases.append(moved)
        cases.append(entries[:k])  # truncation at a line boundary (checkpoints kept)
    for new in cases:
        want = start + first_diff(entries, new)
        check(tmp_path / "t.jsonl", b"".join(head + new + tail), start, want)
    # a forged entry that chains correctly to its predecessor, inserted at k
    for k in range(1, n):
        obj = json.loads(entries[k])
        leaf = json.loads(base64.b64decode(obj["leaf"]))
        forged = canonical.encode(leaf | {"reason": "forged", "jti": "x"})
        line = b'{"type":"entry","index":%d,"leaf":"%s"}\n' % (start + k, base64.b64encode(forged))
        new = [*entries[:k], line, *entries[k:]]
        check(tmp_path / "t.jsonl", b"".join(head + new + tail), start, start + k)


def test_truncated_file(bundle_log: AuditLog, tmp_path: Path) -> None:
    data = export(bundle_log, tmp_path / "orig.jsonl")
    head, entries, _ = split(data)
    offset = len(b"".join(head))
    for k, line in enumerate(entries):
        for cut in (1, len(line) // 2, len(line)):
            target = tmp_path / "t.jsonl"
            target.write_bytes(data[: offset + cut])
            report = verify_bundle(target)
            assert not report.ok
            assert report.first_bad_index == (k if cut < len(line) else k + 1) or (
                cut == len(line) and k == len(entries) - 1 and report.first_bad_index is None
            ), (k, cut, report.errors)
        offset += len(line)


def test_checkpoint_tampering_is_detected(bundle_log: AuditLog, tmp_path: Path) -> None:
    data = export(bundle_log, tmp_path / "orig.jsonl")
    head, entries, tail = split(data)
    note = json.loads(tail[-1])["note"]
    for i in range(len(note)):
        c = note[i]
        if c == "\n":
            continue
        bad = note[:i] + ("B" if c != "B" else "C") + note[i + 1 :]
        line = json.dumps({"type": "checkpoint", "note": bad}).encode() + b"\n"
        p = tmp_path / "t.jsonl"
        p.write_bytes(b"".join([*head, *entries, line]))
        report = verify_bundle(p)
        assert not report.ok, (i, bad)
        assert report.first_bad_index is None
        with pytest.raises((BadCheckpoint, MalformedBundle)):
            report.raise_for_errors()


def test_a_bundle_resigned_with_another_key_fails_when_keys_are_pinned(
    bundle_log: AuditLog, tmp_path: Path
) -> None:
    assert bundle_log.signer is not None
    mallory = NoteSigner.generate(bundle_log.signer.name)
    p = tmp_path / "m.jsonl"
    with p.open("wb") as f:
        forged = AuditLog(bundle_log.engine, signer=mallory)
        checkpoint_now(forged, 3)
        forged.export(f, end=3)  # size 3 is new: signed by mallory, header lists mallory
    assert verify_bundle(p).ok  # self-consistent...
    pinned = verify_bundle(p, trusted_keys=[bundle_log.signer.verifier()])
    assert not pinned.ok and "not signed by any trusted key" in pinned.errors[0]


def test_cosignatures_are_reported(bundle_log: AuditLog, tmp_path: Path) -> None:
    w = CosignatureSigner.generate("regulator.example/witness")
    cp = bundle_log.checkpoint()
    from audit.note import parse_note

    n = parse_note(cp.note)
    line = w.sign(n.text, 1_790_000_000)
    in_entry(
        bundle_log, lambda tx: tx.add_cosignature(str(n.with_signatures([line])), w.verifier())
    )
    p = tmp_path / "c.jsonl"
    export(bundle_log, p, 0, cp.size)
    report = verify_bundle(p, witnesses=[w.verifier()])
    assert report.ok, report.errors
    assert report.checkpoints[-1].cosigned_by == ["regulator.example/witness"]
    plain = verify_bundle(p)
    assert plain.checkpoints[-1].other_signatures == ["regulator.example/witness"]


def test_parallel_workers_agree(bundle_log: AuditLog, tmp_path: Path) -> None:
    p = tmp_path / "w.jsonl"
    data = export(bundle_log, p)
    assert verify_bundle(p, workers=2).ok
    head, entries, tail = split(data)
    bad = entries[4].replace(b'"index":4', b'"index":5')
    p.write_bytes(b"".join([*head, *entries[:4], bad, *entries[5:], *tail]))
    assert verify_bundle(p, workers=2).first_bad_index == 4


def test_cli(bundle_log: AuditLog, tmp_path: Path) -> None:
    p = tmp_path / "cli.jsonl"
    data = export(bundle_log, p)
    env_cmd = [sys.executable, "-m", "audit", "verify", str(p)]
    ok = subprocess.run(env_cmd, cwd=REPO, capture_output=True, text=True, check=False)
    n = bundle_log.size()
    assert ok.returncode == 0 and ok.stdout.startswith(f"OK: {n} entries"), ok.stderr
    assert bundle_log.signer is not None
    pinned = [*env_cmd, "--key", bundle_log.signer.vkey()]
    assert subprocess.run(pinned, cwd=REPO, capture_output=True, check=False).returncode == 0
    p.write_bytes(data.replace(b'"index":2,', b'"index":9,', 1))
    bad = subprocess.run(env_cmd, cwd=REPO, capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "first bad index 2" in bad.stderr
    missing = subprocess.run(
        [*env_cmd[:-1], str(tmp_path / "nope")], cwd=REPO, capture_output=True, check=False
    )
    assert missing.returncode == 1
    verifier = NoteVerifier.from_vkey(bundle_log.signer.vkey())
    assert verifier.public_key == bundle_log.signer.public_key


@pytest.mark.parametrize("start", [3, 5, 6])
def test_an_altered_prefix_line_is_blamed_on_the_prefix(
    bundle_log: AuditLog, tmp_path: Path, start: int
) -> None:
    # Every hash of the prefix line, altered one at a time: the bundle fails, and the
    # report says the prefix (or, when an entry-level cause cannot be ruled out from
    # the bundle alone, names it among the causes) rather than blaming an entry alone.
    data = export(bundle_log, tmp_path / "orig.jsonl", start, 8)
    lines = data.splitlines(keepends=True)
    assert b'"type":"prefix"' in lines[1]
    prefix = json.loads(lines[1])
    for i in range(len(prefix["hashes"])):
        raw = bytearray(base64.b64decode(prefix["hashes"][i]))
        raw[0] ^= 1
        hashes = [*prefix["hashes"]]
        hashes[i] = base64.b64encode(bytes(raw)).decode()
        line = json.dumps({**prefix, "hashes": hashes}, separators=(",", ":")).encode() + b"\n"
        path = tmp_path / f"p{i}.jsonl"
        path.write_bytes(b"".join([lines[0], line, *lines[2:]]))
        report = verify_bundle(path)
        assert not report.ok
        last = i == len(prefix["hashes"]) - 1
        if start % 2 and last:
            # The last hash of an odd start is entry start-1's leaf hash, which entry
            # ``start`` names as prev: the prefix line is shown to be the altered part.
            assert report.first_bad_index is None, report.errors
            assert "prefix line was altered: its last hash" in report.errors[0]
            with pytest.raises(MalformedBundle):
                report.raise_for_errors()
        else:
            assert "prefix line was altered" in report.errors[0], report.errors


def test_an_altered_first_prev_is_not_blamed_on_a_genuine_prefix(
    bundle_log: AuditLog, tmp_path: Path
) -> None:
    # The prefix and entry ``start`` disagree either way; with the prefix genuine, the
    # mended-prefix root does not match, so the entry is named.
    data = export(bundle_log, tmp_path / "orig.jsonl", 5, 6)
    head, entries, tail = split(data)
    obj = json.loads(entries[0])
    leaf = json.loads(base64.b64decode(obj["leaf"]))
    assert "prev" in leaf
    forged = canonical.encode(leaf | {"prev": "00" * 32 if isinstance(leaf["prev"], str) else None})
    line = b'{"type":"entry","index":5,"leaf":"%s"}\n' % base64.b64encode(forged)
    check(tmp_path / "t.jsonl", b"".join([*head, line, *tail]), 5, 5)


def test_deeply_nested_lines_are_reported_not_raised(tmp_path: Path) -> None:
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    header = {"type": "header", "version": 1, "origin": "x", "start": 0, "end": 1, "keys": []}
    for lines in (
        [
            json.dumps(header).encode(),
            b'{"type":"entry","index":0,"leaf":"%s"}' % base64.b64encode(deep),
        ],
        [json.dumps(header).encode(), deep],
    ):
        path = tmp_path / "deep.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        report = verify_bundle(path)  # a RecursionError before
        assert not report.ok and report.errors


def test_json_reports_of_failed_and_unreadable_bundles(
    bundle_log: AuditLog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from audit.__main__ import main as audit_main

    data = export(bundle_log, tmp_path / "orig.jsonl")
    head, entries, tail = split(data)
    tampered = tmp_path / "t.jsonl"
    tampered.write_bytes(b"".join([*head, entries[1], entries[0], *entries[2:], *tail]))
    huge = tmp_path / "huge.jsonl"  # a 5,000-digit index: Python refuses to read it
    huge.write_bytes(
        b"".join([*head, b'{"type":"entry","index":' + b"9" * 5000 + b',"leaf":""}\n'])
    )
    for path in (tampered, huge):
        assert audit_main(["verify", str(path), "--json"]) == 1  # crashed in asdict() before
        report = json.loads(capsys.readouterr().out)
        assert report["ok"] is False and report["errors"]

"""AuditLog on SQLite (file, WAL) and PostgreSQL: durable group-commit appends, no gaps
or duplicates under threads and processes, proofs from the node cache, checkpoints,
cosignatures, filters, export."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from audit_helpers import (
    checkpoint_now,
    in_entry,
    make_entry,
    make_fields,
    new_log,
    sqlite_url,
)

from audit import merkle, verify_bundle
from audit.entry import Entry
from audit.errors import BadCheckpoint, BadEntry, BadSignature, OutOfRange
from audit.log import AuditLog
from audit.note import CosignatureSigner, NoteSigner, open_checkpoint, parse_note

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def log(db_url: str, signer: NoteSigner) -> Iterator[AuditLog]:
    lg = new_log(db_url, signer)
    assert isinstance(lg, AuditLog)
    yield lg
    lg.close()
    lg.engine.dispose()


def leaf_hashes(lg: AuditLog) -> list[bytes]:
    with lg.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT idx, leaf_hash FROM audit_entries ORDER BY idx"))
        out = []
        for i, (idx, h) in enumerate(rows):
            assert idx == i, "gap or duplicate"
            out.append(bytes(h))
    return out


def test_append_returns_committed_entries(log: AuditLog) -> None:
    a = log.append(make_entry(0))
    b = log.append(make_entry(1))
    assert (a.index, b.index) == (0, 1)
    assert log.leaf(1) == b.leaf and b.leaf_hash == merkle.leaf_hash(b.leaf)
    assert log.size() == 2
    entry = log.entries().entries[1].entry
    assert entry["prev"] == a.leaf_hash.hex() and entry["index"] == 1
    with pytest.raises(BadEntry):
        log.append(make_entry(2, index=5))
    assert log.size() == 2  # nothing written for a refused entry


def test_a_nul_in_a_field_is_kept_in_the_leaf_and_fails_no_batch(log: AuditLog) -> None:
    # PostgreSQL text refuses NUL: the searchable copy is replaced, the leaf is exact.
    fields = make_fields(0)
    fields["actor"] = "a\x00b"
    fields["target"] = {"scope": "s\x00", "product": "p"}
    appended = log.append(Entry.from_fields(fields))
    entry = log.entries().entries[0].entry
    assert entry["actor"] == "a\x00b" and entry["target"]["scope"] == "s\x00"
    assert log.leaf(0) == appended.leaf and b"a\\u0000b" in appended.leaf
    assert log.append(make_entry(1)).index == 1


def test_concurrent_threads_no_gaps_and_root_matches(log: AuditLog) -> None:
    threads, per = 16, 40
    seen: list[int] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        for i in range(per):
            res = log.append(make_entry(t * per + i))
            with lock:
                seen.append(res.index)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(seen) == list(range(threads * per))
    hashes = leaf_hashes(log)
    assert log.root() == merkle.root(hashes)
    for size in (1, 2, 3, 100, 257, len(hashes)):
        assert log.root(size) == merkle.root(hashes[:size])


def test_proofs_from_the_store(log: AuditLog) -> None:
    for i in range(37):
        log.append(make_entry(i))
    hashes = leaf_hashes(log)
    for size in (1, 2, 5, 16, 37):
        root = merkle.root(hashes[:size])
        for index in range(size):
            p = log.inclusion_proof(index, size)
            assert p.leaf_hash == hashes[index] and p.root_hash == root
            merkle.verify_inclusion(index, size, p.leaf_hash, p.proof, root)
        for first in range(1, size + 1):
            c = log.consistency_proof(first, size)
            merkle.verify_consistency(first, size, c.first_root, c.second_root, c.proof)
    api = log.inclusion_proof(3, 37).to_api()
    assert set(api) == {"index", "tree_size", "leaf_hash", "root_hash", "proof"}
    for bad in [(37, 37), (-1, 5), (0, 38), (5, 5)]:
        with pytest.raises(OutOfRange):
            log.inclusion_proof(*bad)
    for bad in [(0, 5), (6, 5), (1, 38)]:
        with pytest.raises(OutOfRange):
            log.consistency_proof(*bad)
    with pytest.raises(OutOfRange):
        log.root(38)
    with pytest.raises(OutOfRange):
        log.leaf(37)


def test_entries_filters_and_cursor(log: AuditLog) -> None:
    for i in range(30):
        log.append(make_entry(i))
    log.append(make_entry(30, actor="op-1", role="operator", target={"enterprise": "ent-0"}))
    page = log.entries(actor="ent-1", limit=3)
    assert [e.index for e in page.entries] == [1, 6, 11] and page.next_cursor == 12
    rest = log.entries(actor="ent-1", cursor=page.next_cursor, limit=10)
    assert [e.index for e in rest.entries] == [16, 21, 26] and rest.next_cursor is None
    assert all(e.entry["decision"] == "deny" for e in log.entries(decision="deny").entries)
    assert {e.index for e in log.entries(scope="sc-1").entries} == set(range(1, 30, 3))
    assert len(log.entries(product="enterprise_registry", limit=100).entries) == 30
    assert len(log.entries(action="verify").entries) == 16
    own = log.entries(involves="ent-0").entries
    assert [e.index for e in own][-1] == 30 and own[0].index == 0
    first_time = own[0].entry["time"]
    assert log.entries(start_time=first_time).entries[0].index == 0
    assert log.entries(end_time=first_time).entries == []
    with pytest.raises(OutOfRange):
        log.entries(limit=0)


def test_times_never_go_backwards(db_url: str, signer: NoteSigner) -> None:
    now = [datetime(2026, 11, 23, 12, 0, tzinfo=UTC)]
    lg = new_log(db_url, signer, clock=lambda: now[0])
    assert isinstance(lg, AuditLog)
    a = lg.append(make_entry(0))
    now[0] -= timedelta(seconds=30)  # a clock step back (NTP, another node)
    b = lg.append(make_entry(1))
    assert b.time == a.time == "2026-11-23T12:00:00.000Z"
    lg.close()


def test_checkpoints_and_cosignatures(db_url: str, signer: NoteSigner) -> None:
    now = [datetime(2026, 11, 23, 12, 0, tzinfo=UTC)]
    lg = new_log(db_url, signer, clock=lambda: now[0], checkpoint_entries=5)
    assert isinstance(lg, AuditLog)
    empty = lg.checkpoint()
    assert empty.size == 0 and empty.root == merkle.EMPTY_ROOT
    for i in range(3):
        lg.append(make_entry(i))
    # A call asking within a second of the latest gets the latest; otherwise one of
    # every entry before its own, signed with it.
    assert checkpoint_now(lg, reuse_within=1.0).size == 0  # type: ignore[attr-defined]
    assert checkpoint_now(lg).size == 4  # type: ignore[attr-defined]
    assert lg.maybe_checkpoint() is None
    for i in range(4):
        lg.append(make_entry(i))
    cp = lg.maybe_checkpoint()  # grew by 5
    assert cp is not None and cp.size == 9
    parsed, _ = open_checkpoint(cp.note, [signer.verifier()], origin=lg.origin)
    assert parsed.root == lg.root(9) and parsed.time == cp.time
    assert cp.to_api()["tree_size"] == 9
    now[0] += timedelta(seconds=61)
    lg.append(make_entry(8))
    assert lg.maybe_checkpoint() is not None  # older than checkpoint_interval
    with pytest.raises(OutOfRange):
        checkpoint_now(lg, size=99)
    assert lg.size() == 10  # a writer that raised appended nothing

    w = CosignatureSigner.generate("regulator.example/w1")
    note = parse_note(cp.note)
    cosigned = str(note.with_signatures([w.sign(note.text, 1_790_000_000)]))

    def cosign(text: str, verifier: object) -> Any:
        return in_entry(lg, lambda tx: tx.add_cosignature(text, verifier))

    first = cosign(cosigned, w.verifier())
    line = first.line
    assert first.created
    again = cosign(cosigned, w.verifier())  # idempotent
    assert again.line == line and not again.created
    # A later cosignature of the same checkpoint by the same witness (a newer time)
    # verifies, but the first one is kept and the caller is told so.
    newer = str(note.with_signatures([w.sign(note.text, 1_790_000_100)]))
    kept = cosign(newer, w.verifier())
    assert kept.line == line and not kept.created
    with lg.engine.connect() as conn:
        full = lg.cosigned_note(conn, cp)
        assert lg.latest_cosigned_note(conn) == full
    assert full.endswith(line + "\n") and full.startswith(cp.note)
    other = CosignatureSigner.generate("regulator.example/w1")
    with pytest.raises(BadCheckpoint):
        cosign(cosigned, other.verifier())  # no line by that key
    forged = str(note.with_signatures([other.sign(note.text, 5)]))
    forged = forged.replace(other.sign(note.text, 5).line().split()[-1][:8], "AAAAAAAA")
    with pytest.raises((BadSignature, BadCheckpoint)):
        cosign(forged, other.verifier())
    bogus = note.text.replace("\n9\n", "\n7\n")
    with pytest.raises(BadCheckpoint):
        cosign(str(parse_note(cosigned).__class__(bogus, note.signatures)), w.verifier())
    lg.close()


def test_export_ranges_and_text_stream(log: AuditLog, tmp_path: Path) -> None:
    for i in range(21):
        log.append(make_entry(i))
    for start, end in [(0, 21), (5, 13), (16, 16), (0, 1)]:
        checkpoint_now(log, end)
        p = tmp_path / f"e{start}.jsonl"
        with p.open("w", encoding="utf-8") as f:
            assert log.export(f, start=start, end=end) == end
        report = verify_bundle(p, trusted_keys=[log.signer.verifier()] if log.signer else None)
        assert report.ok, report.errors
    chunks: list[bytes] = []
    checkpoint_now(log, 9)
    log.export(chunks.append, start=3, end=9, page=2)
    assert sum(c.startswith(b'{"type":"entry"') for c in chunks) == 6
    with pytest.raises(OutOfRange):
        log.export(chunks.append, start=5, end=99)
    with pytest.raises(BadCheckpoint, match="no checkpoint of size 20"):
        log.export(chunks.append, end=20)


APPENDER = """
import sys, sqlalchemy as sa
sys.path.insert(0, {tests!r})
from audit_helpers import make_entry, make_fields
from audit.log import AuditLog
log = AuditLog(sa.create_engine(sys.argv[1]))
for i in range(int(sys.argv[2])):
    log.append(make_entry(i))
"""


def test_two_processes_append_without_gaps(db_url: str, signer: NoteSigner) -> None:
    lg = new_log(db_url, signer)
    assert isinstance(lg, AuditLog)
    code = APPENDER.format(tests=str(Path(__file__).parent))
    per = 150
    procs = [
        subprocess.Popen([sys.executable, "-c", code, db_url, str(per)], cwd=REPO) for _ in range(2)
    ]
    for _ in range(per):  # and this process too
        lg.append(make_entry(0))
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    hashes = leaf_hashes(lg)
    assert len(hashes) == 3 * per
    assert lg.root() == merkle.root(hashes)
    entries = [e.entry for e in lg.entries(limit=1000).entries]
    for prev, cur in itertools.pairwise(entries):
        assert cur["prev"] == merkle.leaf_hash(lg.leaf(prev["index"])).hex()
    lg.close()

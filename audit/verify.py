"""Offline verification of an audit bundle (DESIGN §7): stdlib + pycryptodome only.

``verify_bundle(path)`` recomputes every leaf hash and the Merkle root (from the prefix
when the bundle does not start at 0), checks that indices are contiguous, that every
checkpoint is signed by a trusted key and has the recomputed root of its size, and
returns a :class:`Report`. It never raises for a bad bundle: the report says what failed
and, where entries were altered, the first bad index.

How the first bad index is found. Every entry written by ``audit.log`` carries ``prev``,
the leaf hash of its predecessor, so the entries form a hash chain inside the Merkle
tree. At the first position where anything is inconsistent (an unparsable line, an index
out of place, a broken chain link) the verifier decides which entry is the odd one out:

* a malformed line, or one whose line index and leaf index disagree, is itself bad;
* an entry further ahead than expected means entries are missing or reordered there;
* an earlier index appearing again is an insertion: the copy that the following entry's
  chain does *not* continue from is the intruder;
* a broken link at ``p`` means entry ``p - 1`` or entry ``p`` changed; if substituting
  the hash that ``p`` records for ``p - 1`` yields the signed root, only ``p - 1``
  changed, otherwise ``p`` did;
* an intact chain with a wrong root means the last entry changed (or a forger rebuilt
  the chain from an earlier entry: no bundle-internal evidence can tell which, but the
  signed root still fails).

The fast pass (the success path) hashes batches of lines in worker processes for large
bundles; only when it finds a problem does a second, sequential pass pin down the index.
"""

from __future__ import annotations

import base64
import itertools
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from itertools import islice
from typing import IO, Any

from audit.bundle import (
    Header,
    parse_checkpoint_line,
    parse_entry_line,
    parse_header,
    parse_prefix,
)
from audit.errors import AuditError, BadCheckpoint, MalformedBundle, TamperDetected
from audit.merkle import CompactRange, TreeHash, tree_hash
from audit.note import (
    Checkpoint,
    CosignatureVerifier,
    NoteVerifier,
    cosignature_verifier,
    note_verifier,
    open_note,
    parse_note,
)
from audit.suites import suite_named

__all__ = ["CheckpointReport", "Report", "verify_bundle"]

BATCH = 4096
#: Bundles smaller than this are verified in-process (workers cost ~0.2 s to start).
PARALLEL_MIN_BYTES = 32 << 20
_ABSENT = b"absent"  # an entry without a "prev" member (a producer without the chain)
_loads = json.loads


@dataclass
class CheckpointReport:
    """What was found about one checkpoint line."""

    size: int
    root: str
    time: str | None
    signed_by: list[str] = field(default_factory=list)
    cosigned_by: list[str] = field(default_factory=list)
    other_signatures: list[str] = field(default_factory=list)
    root_matches: bool | None = None


@dataclass
class Report:
    """Result of verifying a bundle; ``ok`` only if every check passed."""

    path: str
    origin: str | None = None
    suite: str | None = None
    start: int = 0
    end: int = 0
    entries: int = 0
    first_time: str | None = None
    last_time: str | None = None
    actors: list[str] = field(default_factory=list)
    denials: int = 0
    root: str | None = None
    checkpoints: list[CheckpointReport] = field(default_factory=list)
    keys_pinned: bool = False
    first_bad_index: int | None = None
    errors: list[str] = field(default_factory=list)
    _exc: AuditError | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data, ``ok`` included."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        data["checkpoints"] = [asdict(c) for c in self.checkpoints]
        data["ok"] = self.ok
        return data

    def fail(self, exc: AuditError) -> None:
        """Record a failure; a :class:`TamperDetected` goes first, else the earliest."""
        if isinstance(exc, TamperDetected):
            # The most useful diagnosis goes first: the earliest bad index found.
            if self.first_bad_index is None or exc.index < self.first_bad_index:
                self.first_bad_index = exc.index
                self._exc = exc
                self.errors.insert(0, exc.message)
                return
        elif self._exc is None:
            self._exc = exc
        self.errors.append(exc.message)

    def raise_for_errors(self) -> None:
        """Raise the first recorded error (an :class:`AuditError`), if any."""
        if self._exc is not None:
            raise self._exc

    def summary(self) -> str:
        """One readable line: the verdict and the essentials."""
        if not self.ok:
            where = (
                f" (first bad index {self.first_bad_index})"
                if self.first_bad_index is not None
                else ""
            )
            return f"FAILED{where}: {self.errors[0]}"
        cos = sum(len(c.cosigned_by) for c in self.checkpoints)
        return (
            f"OK: {self.entries} entries [{self.start}, {self.end}) of {self.origin} "
            f"({self.suite}), "
            f"{self.first_time} .. {self.last_time}, {len(self.actors)} actors, "
            f"{self.denials} denials, {len(self.checkpoints)} checkpoint(s), "
            f"{cos} cosignature(s)"
            + (
                ""
                if self.keys_pinned
                else "; keys taken from the bundle header, not pinned: only --key with "
                "the platform's published key rules out a bundle re-signed by someone else"
            )
        )


# --------------------------------------------------------------------------- scanning


@dataclass
class _Batch:
    """Facts about a run of entry lines, as computed by a worker."""

    n: int
    hashes: bytes
    line_idx: list[int]
    leaf_idx: list[int]
    links_ok: bool  # every link inside the batch holds
    first_prev: bytes | None  # the first entry's "prev": 32 bytes, None (null) or _ABSENT
    last_absent: bool
    malformed: bool
    actors: set[str]
    denials: int
    first_time: str | None
    last_time: str | None
    rest: list[bytes]  # lines from the first non-entry line on


def _prev_of(obj: Any) -> bytes | None:
    """The ``prev`` member as bytes, ``None`` for null, ``_ABSENT`` if missing or bad."""
    if not isinstance(obj, dict) or "prev" not in obj:
        return _ABSENT
    pv = obj["prev"]
    if pv is None:
        return None
    if isinstance(pv, str) and len(pv) == 64:
        try:
            return bytes.fromhex(pv)
        except ValueError:
            pass
    return _ABSENT + b"!"  # present but malformed: never equals a hash


def _ends_entries(line: bytes) -> bool:
    """True for a blank line or a checkpoint line: the entries are over."""
    if line.startswith(b'{"type":"entry"'):
        return False
    if not line.strip():
        return True
    try:
        obj = _loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and obj.get("type") == "checkpoint"


def _scan(
    lines: list[bytes], pos0: int, expected: int, leaf_hash: Callable[[bytes], bytes]
) -> _Batch:
    """Hash (with ``leaf_hash``) and check a batch of entry lines starting at entry
    position ``pos0``.

    Stops at the first line that is not an entry (or at position ``expected``); those
    lines are returned in ``rest``. This is the hot loop: keep it lean.
    """
    hashes = bytearray()
    line_idx: list[int] = []
    leaf_idx: list[int] = []
    actors: set[str] = set()
    denials = 0
    first_time: str | None = None
    last_time: str | None = None
    links_ok = True
    malformed = False
    first_prev: bytes | None = _ABSENT
    last_h = b""
    last_absent = False
    rest: list[bytes] = []
    n = 0
    for j, line in enumerate(lines):
        if pos0 + j >= expected or _ends_entries(line):
            rest = lines[j:]
            break
        try:
            idx, leaf = parse_entry_line(line)
        except MalformedBundle:
            malformed = True
            idx, leaf = -1, line
        h = leaf_hash(leaf)
        try:
            obj = _loads(leaf)
        except (ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict):
            li = obj.get("index")
            leaf_idx.append(li if type(li) is int else -2)
            t = obj.get("time")
            if isinstance(t, str):
                if first_time is None:
                    first_time = t
                last_time = t
            a = obj.get("actor")
            if isinstance(a, str):
                actors.add(a)
            if obj.get("decision") == "deny":
                denials += 1
            pv = obj.get("prev", _ABSENT)
            prev = pv if pv is _ABSENT or pv is None else _prev_of(obj)
        else:
            malformed = True
            leaf_idx.append(-2)
            prev = _ABSENT + b"!"
        if n == 0:
            first_prev = prev
        elif prev is _ABSENT:
            links_ok = links_ok and last_absent
        elif prev != last_h:
            links_ok = False
        last_absent = prev is _ABSENT
        last_h = h
        hashes += h
        line_idx.append(idx)
        n += 1
    return _Batch(
        n,
        bytes(hashes),
        line_idx,
        leaf_idx,
        links_ok,
        first_prev,
        last_absent,
        malformed,
        actors,
        denials,
        first_time,
        last_time,
        rest,
    )


# --------------------------------------------------------------------------- checkpoints


def _tail_checkpoint_sizes(f: IO[bytes]) -> set[int]:
    """Sizes of the checkpoint lines at the end of the file (read backwards).

    A hint only, so roots of those sizes can be kept during the single forward pass; the
    forward pass still checks every line.
    """
    sizes: set[int] = set()
    f.seek(0, os.SEEK_END)
    pos = f.tell()
    buf = b""
    while pos > 0:
        step = min(1 << 16, pos)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + buf
        lines = buf.split(b"\n")
        buf = lines[0]  # possibly partial
        for line in reversed(lines[1:]):
            if not line.strip():
                continue
            if line.startswith(b'{"type":"entry"') or line.startswith(b'{"type":"header"'):
                return sizes
            try:
                note = parse_note(parse_checkpoint_line(line))
                sizes.add(Checkpoint.parse(note.text).size)
            except AuditError:
                continue
        if len(buf) > 1 << 24:  # a 16 MiB line is no checkpoint
            break
    return sizes


def _check_checkpoints(
    report: Report,
    header: Header,
    lines: list[bytes],
    roots: dict[int, bytes],
    verifiers: Sequence[NoteVerifier],
    witnesses: Sequence[CosignatureVerifier],
) -> dict[int, bytes]:
    """Check the checkpoint lines; return the roots of validly signed ones by size."""
    signed: dict[int, bytes] = {}
    for line in lines:
        if not line.strip():
            continue
        try:
            note_text = parse_checkpoint_line(line)
        except MalformedBundle as exc:
            err: AuditError = exc
            if line.startswith(b'{"type":"entry"'):
                err = TamperDetected(
                    header.start + report.entries,
                    "an entry beyond the bundle's end or after its checkpoints",
                )
            report.fail(err)
            continue
        try:
            note = open_note(note_text, verifiers)
            cp = Checkpoint.parse(note.text)
        except AuditError as exc:
            report.fail(BadCheckpoint(f"checkpoint: {exc.message}"))
            continue
        cr = CheckpointReport(cp.size, base64.b64encode(cp.root).decode(), cp.time)
        report.checkpoints.append(cr)
        for sig in note.signatures:
            if any(v.matches(sig) for v in verifiers):
                cr.signed_by.append(sig.name)
                continue
            wit = [w for w in witnesses if w.matches(sig)]
            if not wit:
                cr.other_signatures.append(sig.name)
                continue
            try:
                wit[0].verify(note.text, sig)
                cr.cosigned_by.append(sig.name)
            except AuditError as exc:
                report.fail(BadCheckpoint(f"checkpoint {cp.size}: {exc.message}"))
        if cp.origin != header.origin:
            report.fail(BadCheckpoint(f"checkpoint origin {cp.origin!r} is not the bundle's"))
            continue
        if not header.start <= cp.size <= header.end:
            report.fail(
                BadCheckpoint(
                    f"checkpoint of size {cp.size} is outside [{header.start}, {header.end}]"
                )
            )
            continue
        signed[cp.size] = cp.root
        want = roots.get(cp.size)
        if want is not None:  # unknown only when entries are missing: reported elsewhere
            cr.root_matches = want == cp.root
    if header.end not in signed:
        report.fail(BadCheckpoint(f"no validly signed checkpoint of tree size {header.end}"))
    return signed


# --------------------------------------------------------------------------- diagnosis


@dataclass
class _Facts:
    malformed: str | None
    line_idx: int
    leaf_idx: int
    h: bytes
    prev: bytes | None


def _facts(line: bytes, th: TreeHash) -> _Facts:
    try:
        idx, leaf = parse_entry_line(line)
    except MalformedBundle as exc:
        return _Facts(exc.message, -1, -2, th.leaf(line), _ABSENT + b"!")
    h = th.leaf(leaf)
    try:
        obj = _loads(leaf)
    except (ValueError, RecursionError):
        return _Facts("leaf is not JSON", idx, -2, h, _ABSENT + b"!")
    if not isinstance(obj, dict):
        return _Facts("leaf is not a JSON object", idx, -2, h, _ABSENT + b"!")
    li = obj.get("index")
    return _Facts(None, idx, li if type(li) is int else -2, h, _prev_of(obj))


def _link(before: _Facts | None, cur: _Facts, start: int, p: int) -> bool | None:
    """Does ``cur`` chain to ``before``? ``None`` when it cannot be checked."""
    if before is None:
        return None if start > 0 or p > 0 else (cur.prev is None or cur.prev is _ABSENT)
    if cur.prev is _ABSENT:
        return before.prev is _ABSENT
    return cur.prev == before.h


def _prefix_was_altered(
    prefix: CompactRange, first_prev: object, hashes: list[bytes], signed_root: bytes
) -> bool:
    """For an odd ``start`` the prefix's last hash is entry start-1's leaf hash, which
    the first exported entry names as ``prev``. If the two differ and putting the
    entry's ``prev`` in the prefix yields the signed root, the prefix line was altered
    (the entries are as checkpointed)."""
    if prefix.size % 2 == 0 or not isinstance(first_prev, bytes) or len(first_prev) != 32:
        return False
    if first_prev == prefix.hashes[-1]:
        return False
    mended = CompactRange(prefix.size, [*prefix.hashes[:-1], first_prev], th=prefix.th)
    for h in hashes:
        mended.append(h)
    return mended.root() == signed_root


def _diagnose(
    f: IO[bytes], entries_at: int, header: Header, prefix: CompactRange, signed: dict[int, bytes]
) -> TamperDetected | MalformedBundle | None:
    """Sequential pass naming the first bad index (rules in the module docstring).

    The first bad index is the first position at which the bundle's entries differ
    from the log's: what is there is altered, inserted or out of place, or is missing.
    """
    start, end = header.start, header.end
    f.seek(entries_at)
    cr = prefix.copy()
    snap_cur = cr.copy()  # compact range before the current entry
    snap_prev = cr.copy()  # ... before the previous one
    before: _Facts | None = None
    p0: int | None = None
    f0: _Facts | None = None
    b0: _Facts | None = None
    after: _Facts | None = None
    alt: CompactRange | None = None
    first: _Facts | None = None
    hashes: list[bytes] = []  # the entries' leaf hashes, to test a mended prefix
    p = 0
    for line in f:
        if p >= end - start or _ends_entries(line):
            if p0 is not None and p == p0 + 1 and not _ends_entries(line):
                after = _facts(line, prefix.th)  # one entry of lookahead, even past 'end'
            break
        cur = _facts(line, prefix.th)
        if first is None:
            first = cur
        hashes.append(cur.h)
        if p0 is None:
            snap_prev, snap_cur = snap_cur, cr.copy()
            e = start + p
            if (
                cur.malformed is not None
                or cur.line_idx != e
                or cur.leaf_idx != cur.line_idx
                or _link(before, cur, start, p) is False
            ):
                p0, f0, b0 = p, cur, before
                if (
                    cur.malformed is None
                    and cur.line_idx == cur.leaf_idx == e
                    and before is not None
                    and isinstance(cur.prev, bytes)
                    and len(cur.prev) == 32
                ):
                    # Hypothesis: only entry p-1 changed, and cur.prev is its true hash.
                    alt = snap_prev.copy()
                    alt.append(cur.prev)
        elif p == p0 + 1:
            after = cur
        cr.append(cur.h)
        if alt is not None and alt.size < cr.size:
            alt.append(cur.h)
        before = cur
        p += 1
    signed_root = signed.get(end) if p == end - start else None
    if p0 is None or f0 is None:
        if p < end - start:
            return TamperDetected(
                start + p, f"missing: the bundle has {p} of {end - start} entries"
            )
        if signed_root is not None and cr.root() != signed_root and end > start:
            if first is not None and _prefix_was_altered(prefix, first.prev, hashes, signed_root):
                return MalformedBundle(
                    f"the prefix line was altered: its last hash is not the leaf hash that "
                    f"entry {start} names as prev, and with that hash the root matches"
                )
            return TamperDetected(
                end - 1,
                "the root does not match the checkpoint while the chain is intact: the last "
                "entry was altered (or the chain was rebuilt from an earlier entry)"
                + (", or the prefix line was altered" if start > 0 else ""),
            )
        return None
    e = start + p0
    if f0.malformed is not None:
        return TamperDetected(e, f0.malformed)
    if f0.line_idx != f0.leaf_idx:
        return TamperDetected(e, f"line says index {f0.line_idx}, leaf says {f0.leaf_idx}")
    if f0.line_idx > e:
        return TamperDetected(e, f"found index {f0.line_idx}: entries missing or reordered")
    if f0.line_idx < e:
        if (
            f0.line_idx == e - 1
            and b0 is not None
            and f0.h != b0.h
            and after is not None
            and after.prev == f0.h
        ):
            return TamperDetected(e - 1, "inserted entry: the log's chain continues past it")
        return TamperDetected(e, f"index {f0.line_idx} repeated: an inserted entry")
    if alt is not None and signed_root is not None:
        if alt.root() == signed_root:
            return TamperDetected(e - 1, "altered: its successor records another hash for it")
        return TamperDetected(e, "altered: it does not chain to its predecessor")
    if b0 is not None and after is not None and after.line_idx == e + 1 and after.prev == f0.h:
        return TamperDetected(e - 1, "altered: its successor records another hash for it")
    return TamperDetected(e, "altered: it does not chain to its predecessor")


# --------------------------------------------------------------------------- driver


def _batches(f: IO[bytes], size: int) -> Iterator[list[bytes]]:
    while True:
        batch = list(islice(f, size))
        if not batch:
            return
        yield batch


@dataclass
class _Pass:
    roots: dict[int, bytes]
    anomaly: bool
    rest: list[bytes]


class _Accumulator:
    """Folds batch results, in order, into the compact range and the report."""

    def __init__(self, header: Header, prefix: CompactRange, wanted: set[int], report: Report):
        self.start, self.end = header.start, header.end
        self.cr = prefix.copy()
        self.roots: dict[int, bytes] = {self.start: self.cr.root()}
        self.marks = sorted(s for s in wanted if self.start < s < self.end)
        self.report = report
        self.actors: set[str] = set()
        self.anomaly = False
        self.last_h = b""
        self.last_absent = False
        self.rest: list[bytes] = []
        self.pos = 0

    def add(self, b: _Batch, lines: list[bytes]) -> None:
        if self.rest:  # entries after the checkpoints: leave them to the checkpoint check
            if b.n:
                self.anomaly = True
            self.rest.extend(lines or ([b'{"type":"entry"}\n'] if b.n else []))
            self.rest.extend(b.rest)
            return
        exp0 = self.start + self.pos
        want = list(range(exp0, exp0 + b.n))
        if b.malformed or b.line_idx != want or b.leaf_idx != want or not b.links_ok:
            self.anomaly = True
        if b.n:
            fp = b.first_prev
            if self.pos == 0:
                if self.start == 0 and not (fp is None or fp is _ABSENT):
                    self.anomaly = True
            elif fp is _ABSENT:
                self.anomaly = self.anomaly or not self.last_absent
            elif fp != self.last_h:
                self.anomaly = True
            self.last_h = b.hashes[-32:]
            self.last_absent = b.last_absent
            if self.report.first_time is None:
                self.report.first_time = b.first_time
            self.report.last_time = b.last_time or self.report.last_time
        self.actors.update(b.actors)
        self.report.denials += b.denials
        hs, cr, k = b.hashes, self.cr, 0
        app = cr.append
        while k < b.n:
            stop = b.n
            if self.marks and self.marks[0] - cr.size < stop - k:
                stop = k + self.marks[0] - cr.size
            for off in range(32 * k, 32 * stop, 32):
                app(hs[off : off + 32])
            k = stop
            if self.marks and cr.size == self.marks[0]:
                self.roots[cr.size] = cr.root()
                self.marks.pop(0)
        self.pos += b.n
        self.rest.extend(b.rest)

    def finish(self) -> _Pass:
        if self.cr.size == self.end:
            self.roots[self.end] = self.cr.root()
        r = self.report
        r.entries = self.pos
        r.actors = sorted(self.actors)
        r.root = base64.b64encode(self.cr.root()).decode()
        return _Pass(self.roots, self.anomaly, self.rest)


def _fast_pass(
    f: IO[bytes],
    header: Header,
    prefix: CompactRange,
    wanted: set[int],
    report: Report,
    workers: int | None,
) -> _Pass:
    """Hash all entry lines, in worker processes if asked; fold them in order."""
    acc = _Accumulator(header, prefix, wanted, report)
    expected = header.end - header.start
    leaf = prefix.th.leaf
    nworkers = workers
    if nworkers is None:
        size = os.fstat(f.fileno()).st_size
        nworkers = (os.cpu_count() or 1) if size >= PARALLEL_MIN_BYTES else 0
    if nworkers <= 0:
        for batch in _batches(f, BATCH):
            acc.add(_scan(batch, acc.pos, expected, leaf) if not acc.rest else _EMPTY, batch)
        return acc.finish()
    # Workers read their own byte ranges of the file (aligned to line starts), so only
    # leaf hashes and small facts travel between processes.
    begin = f.tell()
    total = os.fstat(f.fileno()).st_size
    step = max(1 << 20, (total - begin) // (8 * nworkers) + 1)
    bounds = [begin]
    while bounds[-1] < total:
        f.seek(min(bounds[-1] + step, total))
        if f.tell() < total:
            f.readline()
        bounds.append(f.tell())
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=nworkers, mp_context=ctx) as pool:
        futures = [
            pool.submit(_scan_range, str(f.name), a, b, prefix.th.name)
            for a, b in itertools.pairwise(bounds)
        ]
        for fut in futures:
            acc.add(fut.result(), [])
    return acc.finish()


def _scan_range(path: str, begin: int, stop: int, hash_name: str) -> _Batch:
    """Worker: scan the lines of ``path`` in the byte range ``[begin, stop)``, hashing
    with ``hash_name`` (``sha256`` or ``sm3``)."""
    with open(path, "rb") as f:
        f.seek(begin)
        lines = f.read(stop - begin).splitlines(keepends=True)
    # No cut-off by position here: extra entries are caught by the count in the driver.
    return _scan(lines, 0, 1 << 62, tree_hash(hash_name).leaf)


_EMPTY = _Batch(0, b"", [], [], True, _ABSENT, False, False, set(), 0, None, None, [])


def verify_bundle(
    path: str | os.PathLike[str],
    *,
    trusted_keys: Sequence[NoteVerifier] | None = None,
    witnesses: Sequence[CosignatureVerifier] = (),
    workers: int | None = None,
) -> Report:
    """Verify the bundle at ``path`` offline and return a :class:`Report`.

    ``trusted_keys`` pins the log's keys (otherwise the header's keys are used, and the
    report says so); ``witnesses`` are cosigners whose lines are verified and listed.
    ``workers``: processes that hash lines (default: the CPU count for bundles over
    32 MiB, else none). Never raises for a bad bundle; I/O errors propagate.
    """
    report = Report(str(path))
    try:
        return _verify_into(report, path, trusted_keys, witnesses, workers)
    except (ValueError, RecursionError) as exc:
        # Hostile values the parsers let through (e.g. a 5,000-digit index or size,
        # nesting deeper than Python's stack): still a report, never a traceback.
        report.fail(MalformedBundle(f"unreadable bundle: {type(exc).__name__}"))
        return report


def _verify_into(
    report: Report,
    path: str | os.PathLike[str],
    trusted_keys: Sequence[NoteVerifier] | None,
    witnesses: Sequence[CosignatureVerifier],
    workers: int | None,
) -> Report:
    with open(path, "rb") as f:
        try:
            header = parse_header(f.readline())
        except AuditError as exc:
            report.fail(exc)
            return report
        report.origin, report.start, report.end = header.origin, header.start, header.end
        report.suite = header.suite
        try:
            suite = suite_named(header.suite)
            th = suite.tree
        except AuditError as exc:
            report.fail(MalformedBundle(f"header suite: {exc.message}"))
            return report
        try:
            verifiers: Sequence[NoteVerifier] = (
                trusted_keys
                if trusted_keys is not None
                else [note_verifier(k) for k in header.keys]
            )
        except AuditError as exc:
            report.fail(MalformedBundle(f"header key: {exc.message}"))
            return report
        # DESIGN §13: the log signs with its suite's key type (SM2 in sm2-sm3).
        wrong = [v.name for v in verifiers if v.key_type != suite.key_type]
        if wrong:
            report.fail(
                BadCheckpoint(
                    f"the {suite.name} suite signs checkpoints with {suite.key_type} keys; "
                    f"key {wrong[0]!r} is not one"
                )
            )
            return report
        report.keys_pinned = trusted_keys is not None
        if not witnesses and isinstance(header.extra.get("witnesses"), list):
            # Witness keys named by the bundle itself: enough to tell which checkpoints
            # carry which cosignatures; a regulator pins its own key with --witness.
            try:
                witnesses = [
                    cosignature_verifier(k)
                    for k in header.extra["witnesses"]
                    if isinstance(k, dict)
                ]
            except AuditError as exc:
                report.fail(MalformedBundle(f"header witness key: {exc.message}"))
                return report
        prefix = CompactRange(th=th)
        if header.start > 0:
            try:
                size, hashes = parse_prefix(f.readline())
                if size != header.start:
                    raise MalformedBundle(f"prefix size {size} is not start {header.start}")
                prefix = CompactRange(size, hashes, th=th)
            except AuditError as exc:
                report.fail(exc)
                return report
        entries_at = f.tell()
        wanted = _tail_checkpoint_sizes(f)
        f.seek(entries_at)
        result = _fast_pass(f, header, prefix, wanted, report, workers)
        signed = _check_checkpoints(report, header, result.rest, result.roots, verifiers, witnesses)
        bad_roots = sorted(c.size for c in report.checkpoints if c.root_matches is False)
        complete = report.entries == header.end - header.start
        if result.anomaly or bad_roots or not complete:
            verdict = _diagnose(f, entries_at, header, prefix, signed)
            if verdict is None and bad_roots:
                if bad_roots[0] > header.start:
                    verdict = TamperDetected(
                        bad_roots[0] - 1, "the root of a checkpoint does not match the entries"
                    )
                else:
                    report.fail(MalformedBundle("the prefix does not match its checkpoint"))
            if verdict is not None:
                report.fail(verdict)
            elif report.ok:
                report.fail(MalformedBundle("entries are inconsistent"))
    return report

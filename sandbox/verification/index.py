"""Answer indexes: every answer a verification product can give, computed once by DuckDB.

A verification product's parameters are finite: each check's parameter is fixed by
the operator or picked by the caller from ``allowed_params``. So everything a call
can learn about one record is a handful of booleans: one per (check, parameter)
*variant*. DuckDB evaluates them all, for every record, in one pass over the data
file (the same SQL expressions as the point lookup), and the runner keeps the result
as three sorted ``uint64`` columns in a ``.npy`` file next to the data file:

- ``hi``, ``lo``: the MD5 of the record's *key text*, as DuckDB's
  ``md5_number_upper`` / ``md5_number_lower`` (the digest's two halves, little-endian);
- ``bits``: bit ``i`` set when variant ``i`` holds for the record.

A call then costs a binary search in memory-mapped arrays (shared by every process
on the host through the page cache) instead of a DuckDB statement. No record value
ever reaches Python: only key hashes and booleans, as before.

The key text is injective: each key value as text (integers in decimal, dates as
``YYYY-MM-DD``, strings as they are) prefixed by its UTF-8 length and a colon. A key
that occurs more than once, or two keys whose hashes collide (never seen, 128 bits),
are left out, so they answer "not found", as the point lookup does for a key
matching several rows. The file name carries a digest of the definition, the product
columns used, the data file's size and mtime and ``FORMAT``: a new data version or a
changed definition gets a new index, never a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from products.manifest import DataProduct, Scalar
from products.verification import KEY_TYPES, Check, Op, Param, VerificationProduct
from sandbox.verification.sql import Statement, check_sql, column_types, param_sql, quote

FORMAT = 1
MAX_VARIANTS = 64  # bits of one uint64; a product with more is answered by point lookups
CHUNK_ROWS = 1_000_000  # rows evaluated per DuckDB statement while building


def key_text(values: Sequence[Scalar]) -> bytes:
    """Return the UTF-8 key text of normalised key values (str or int)."""
    parts = []
    for v in values:
        text = str(v) if isinstance(v, int) and not isinstance(v, bool) else v
        if not isinstance(text, str):
            raise TypeError(f"key values are str or int, not {type(v).__name__}")
        raw = text.encode("utf-8")
        parts.append(b"%d:%b" % (len(raw), raw))
    return b"".join(parts)


def key_halves(values: Sequence[Scalar]) -> tuple[int, int]:
    """Return (hi, lo): the MD5 of the key text split as DuckDB's md5_number_upper/lower."""
    digest = hashlib.md5(key_text(values), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")


@dataclass(frozen=True)
class Layout:
    """Which bit answers which (check, parameter) variant."""

    variants: tuple[tuple[Check, Param | None], ...]
    first_bit: dict[str, int]  # check name -> bit of its first variant

    @classmethod
    def of(cls, vp: VerificationProduct) -> Layout | None:
        """Return the layout, or ``None`` when the product cannot be indexed."""
        variants: list[tuple[Check, Param | None]] = []
        first: dict[str, int] = {}
        for check in vp.checks:
            first[check.name] = len(variants)
            if check.allowed_params is not None and check.op is not Op.EXISTS:
                variants.extend((check, p) for p in check.allowed_params)
            else:
                variants.append((check, check.param))
        if len(variants) > MAX_VARIANTS:
            return None
        return cls(tuple(variants), first)

    def bit(self, check: Check, param: Param | None) -> int:
        """Return the bit of ``check`` with the parameter a call bound.

        Raises ``KeyError`` for a parameter outside the definition (never after
        ``bind_params``, which takes the value from ``allowed_params``).
        """
        base = self.first_bit[check.name]
        if check.allowed_params is None or check.op is Op.EXISTS:
            return base
        for offset, allowed in enumerate(check.allowed_params):
            if allowed == param and type(allowed) is type(param):
                return base + offset
        raise KeyError(check.name)


def indexable(vp: VerificationProduct, product: DataProduct) -> Layout | None:
    """Return the layout if ``vp`` can be answered from an index, else ``None``."""
    for name in vp.key:
        col = product.column(name)
        if col is None or col.type not in KEY_TYPES:
            return None
    return Layout.of(vp)


def index_path(vp: VerificationProduct, product: DataProduct, data_path: Path) -> Path:
    """Return where the index of ``vp`` over this data file lives."""
    st = data_path.stat()
    used = sorted({*vp.key, *(c.column for c in vp.checks)})
    columns = [(n, product.column(n).type.value) for n in used]  # type: ignore[union-attr]
    material = json.dumps(
        [FORMAT, vp.to_dict(), product.id, columns, st.st_size, st.st_mtime_ns],
        sort_keys=True,
        ensure_ascii=True,
    ).encode()
    digest = hashlib.sha256(material).hexdigest()[:24]
    return data_path.parent / f"{data_path.name}.answers" / f"{vp.id}.{digest}.npy"


class AnswerIndex:
    """A loaded (memory-mapped) index: ``lookup(key) -> bits | None``."""

    def __init__(self, path: Path, layout: Layout) -> None:
        table = np.load(path, mmap_mode="r", allow_pickle=False)
        if table.ndim != 2 or table.shape[0] != 3 or table.dtype != np.uint64:
            raise ValueError(f"{path.name} is not an answer index")
        self.path = path
        self.layout = layout
        self._hi, self._lo, self._bits = table[0], table[1], table[2]
        self._n = int(table.shape[1])

    def __len__(self) -> int:
        return self._n

    def lookup(self, key: Sequence[Scalar]) -> int | None:
        """Return the variant bits of the record with ``key``, or ``None`` if none."""
        hi, lo = key_halves(key)
        i = int(np.searchsorted(self._hi, np.uint64(hi)))
        while i < self._n and int(self._hi[i]) == hi:
            if int(self._lo[i]) == lo:
                return int(self._bits[i])
            i += 1
        return None

    def answers(self, check_bits: Sequence[int], key: Sequence[Scalar]) -> tuple[list[bool], bool]:
        """Return (one boolean per check, found) for ``key`` and the chosen variants."""
        bits = self.lookup(key)
        if bits is None:
            return [False] * len(check_bits), False
        return [bool(bits >> b & 1) for b in check_bits], True


def _key_text_sql(vp: VerificationProduct) -> str:
    parts = []
    for name in vp.key:
        cell = f"CAST(t.{quote(name)} AS VARCHAR)"
        parts.append(f"CAST(strlen({cell}) AS VARCHAR) || ':' || {cell}")
    return " || ".join(parts)


def build(
    cursor: duckdb.DuckDBPyConnection,
    table: str,
    vp: VerificationProduct,
    product: DataProduct,
    layout: Layout,
    out: Path,
) -> int:
    """Evaluate every variant for every record of ``table`` and write the index to
    ``out`` (atomically: a temporary file renamed into place). Returns its entries.

    ``table`` is the quoted, schema-qualified table on ``cursor``'s read-only instance.
    """

    types = column_types(vp, product)
    st = Statement()
    terms = []
    for bit, (check, param) in enumerate(layout.variants):
        cell = f"t.{quote(check.column)}"
        value = param_sql(st, check, param, types[check.column])
        terms.append(f"CASE WHEN {check_sql(check, cell, value)} THEN {1 << bit} ELSE 0 END")
    bits = " + ".join(f"CAST({t} AS UBIGINT)" for t in terms) or "CAST(0 AS UBIGINT)"
    text = _key_text_sql(vp)
    not_null = " AND ".join(f"t.{quote(k)} IS NOT NULL" for k in vp.key)
    (rows,) = cursor.execute(f"SELECT max(rowid) + 1 FROM {table}").fetchone() or (0,)
    rows = int(rows or 0)
    n_params = len(st.params)
    sql = (
        f"SELECT md5_number_upper(k) AS hi, md5_number_lower(k) AS lo, bits FROM ("
        f"SELECT {text} AS k, {bits} AS bits FROM {table} AS t "
        f"WHERE {not_null} AND t.rowid >= ${n_params + 1} AND t.rowid < ${n_params + 2})"
    )
    his, los, bitss = [], [], []
    for start in range(0, rows, CHUNK_ROWS):
        got: dict[str, Any] = cursor.execute(
            sql, [*st.params, start, start + CHUNK_ROWS]
        ).fetchnumpy()
        his.append(np.asarray(got["hi"], dtype=np.uint64))
        los.append(np.asarray(got["lo"], dtype=np.uint64))
        bitss.append(np.asarray(got["bits"], dtype=np.uint64))
    hi = np.concatenate(his) if his else np.zeros(0, np.uint64)
    lo = np.concatenate(los) if los else np.zeros(0, np.uint64)
    bit_col = np.concatenate(bitss) if bitss else np.zeros(0, np.uint64)
    order = np.lexsort((lo, hi))
    hi, lo, bit_col = hi[order], lo[order], bit_col[order]
    # A key present twice (or a hash collision) is dropped: it answers "not found".
    same = (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])
    drop = np.zeros(len(hi), dtype=bool)
    drop[1:] |= same
    drop[:-1] |= same
    table_out = np.stack([hi[~drop], lo[~drop], bit_col[~drop]])
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, table_out, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return int(table_out.shape[1])

"""The audit log's tables, on audit's own SQLAlchemy ``MetaData`` (names ``audit_*``).

* ``audit_entries``: one row per entry; the leaf bytes verbatim plus copies of the
  fields that ``AuditLog.entries`` filters on (indexed). Never updated or deleted.
* ``audit_nodes``: hashes of perfect subtrees (level >= 1; level 0 is
  ``audit_entries.leaf_hash``), written when an append completes them, so roots and proofs
  are O(log n) lookups and never a rebuild.
* ``audit_head``: a single row (``id = 1``): tree size, the compact range (frontier) of
  the whole tree, the last leaf hash and time. Appends lock it (PostgreSQL ``FOR UPDATE``,
  SQLite ``BEGIN IMMEDIATE``), which is what serialises index assignment across processes.
* ``audit_checkpoints``: signed checkpoints, one per tree size.
* ``audit_cosignatures``: witness cosignature lines for a checkpoint.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["checkpoints", "cosignatures", "entries", "head", "metadata", "nodes"]

metadata = sa.MetaData()

entries = sa.Table(
    "audit_entries",
    metadata,
    sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("leaf", sa.LargeBinary, nullable=False),
    sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
    # RFC 3339 UTC with milliseconds: fixed width, so string order is time order.
    sa.Column("time", sa.String(24), nullable=False),
    sa.Column("actor", sa.String(200)),
    sa.Column("role", sa.String(32)),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("decision", sa.String(8), nullable=False),
    sa.Column("product", sa.String(200)),
    sa.Column("scope", sa.String(200)),
    # The other principal an entry concerns (target.enterprise / target.principal), so
    # that an enterprise can read entries about it that an operator made.
    sa.Column("subject", sa.String(200)),
    sa.Index("ix_audit_entries_time", "time"),
    sa.Index("ix_audit_entries_actor", "actor", "idx"),
    sa.Index("ix_audit_entries_subject", "subject", "idx"),
    sa.Index("ix_audit_entries_action", "action", "idx"),
    sa.Index("ix_audit_entries_product", "product", "idx"),
    sa.Index("ix_audit_entries_scope", "scope", "idx"),
)

nodes = sa.Table(
    "audit_nodes",
    metadata,
    sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
)

head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("frontier", sa.LargeBinary, nullable=False),  # 32-byte hashes, largest first
    sa.Column("last_leaf_hash", sa.LargeBinary(32)),
    sa.Column("last_time", sa.String(24)),
)

checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root", sa.LargeBinary(32), nullable=False),
    sa.Column("time", sa.String(24), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
)

cosignatures = sa.Table(
    "audit_cosignatures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "checkpoint_size",
        sa.BigInteger,
        sa.ForeignKey("audit_checkpoints.size"),
        nullable=False,
    ),
    sa.Column("witness", sa.String(200), nullable=False),
    sa.Column("key_id", sa.LargeBinary(4), nullable=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("line", sa.Text, nullable=False),
    sa.UniqueConstraint("checkpoint_size", "witness", "key_id", name="uq_audit_cosignature"),
)

"""Model products' tables (DESIGN §11.3), on their own MetaData (migration 3)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

model_products = sa.Table(
    "model_products",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("product", sa.String(64), nullable=False),  # products.id (other MetaData)
    sa.Column("defined_by", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("model_product", sa.String(64), sa.ForeignKey("model_products.id"), primary_key=True),
    sa.Column("version", sa.String(64), primary_key=True),  # sha256 hex of the definition
    sa.Column("seq", sa.Integer, nullable=False),  # 1, 2, ... per model product
    sa.Column("definition", sa.Text, nullable=False),  # the canonical JSON hashed
    sa.Column("training", sa.Text, nullable=True),  # JSON: the training release, if any
    sa.Column("status", sa.String(16), nullable=False),  # draft | filed | withdrawn
    sa.Column("calls", sa.BigInteger, nullable=False, default=0),  # subjects scored
    sa.Column("defined_by", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("model_product", "seq", name="uq_model_versions_seq"),
)

model_filings = sa.Table(
    "model_filings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_product", sa.String(64), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("event", sa.String(16), nullable=False),  # define | file | withdraw
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("audit_index", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_model_filings_product", "model_product"),
)

"""The catalogue's tables, on this package's own ``MetaData``."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

products = sa.Table(
    "products",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(128), nullable=False),
    sa.Column("manifest", sa.Text, nullable=False),  # canonical JSON of the manifest
    sa.Column("status", sa.String(16), nullable=False),  # active | retired
    sa.Column("current_version", sa.Integer, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

product_versions = sa.Table(
    "product_versions",
    metadata,
    sa.Column("product_id", sa.String(64), sa.ForeignKey("products.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),  # loading | active | failed
    sa.Column("row_count", sa.BigInteger, nullable=True),
    sa.Column("content_hash", sa.String(64), nullable=True),
    sa.Column("data_file", sa.String(255), nullable=False),  # relative to products dir
    sa.Column("loaded_by", sa.String(128), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
)

verification_products = sa.Table(
    "verification_products",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("product_id", sa.String(64), sa.ForeignKey("products.id"), nullable=False),
    sa.Column("definition", sa.Text, nullable=False),  # canonical JSON
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

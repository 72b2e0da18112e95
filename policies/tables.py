"""Policy tables (principals, keys, nonces, scopes, budget, limits) on their own MetaData.

Epsilons are stored as integers in units of 1e-9 ("nano-epsilon"), deltas in units of
1e-18 ("atto-delta"), so that budget
arithmetic is exact and a conditional ``UPDATE … SET spent = spent + x WHERE
spent + x <= total`` is atomic on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

principals = sa.Table(
    "principals",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("name", sa.String(300), nullable=False),
    sa.Column("created_by", sa.String(128), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
)

principal_keys = sa.Table(
    "principal_keys",
    metadata,
    sa.Column("principal_id", sa.String(128), sa.ForeignKey("principals.id"), primary_key=True),
    sa.Column("kid", sa.String(128), primary_key=True),
    sa.Column("alg", sa.String(16), nullable=False),
    sa.Column("public_key", sa.Text, nullable=False),  # SPKI PEM
    sa.Column("status", sa.String(16), nullable=False),  # active | disabled
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
)

nonces = sa.Table(
    "call_nonces",
    metadata,
    sa.Column("issuer", sa.String(128), primary_key=True),
    sa.Column("jti", sa.String(256), primary_key=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

scopes = sa.Table(
    "scopes",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("enterprise", sa.String(128), sa.ForeignKey("principals.id"), nullable=False),
    sa.Column("product", sa.String(64), nullable=False),  # products.id (other MetaData)
    sa.Column("purpose", sa.Text, nullable=False),
    sa.Column("operations", sa.Text, nullable=False),  # canonical JSON
    sa.Column("epsilon_nano", sa.BigInteger, nullable=False),
    sa.Column("delta_atto", sa.BigInteger, nullable=False),  # units of 1e-18
    sa.Column("delta_spent_atto", sa.BigInteger, nullable=False, default=0),
    sa.Column("max_epsilon_per_query_nano", sa.BigInteger, nullable=False),
    sa.Column("spent_nano", sa.BigInteger, nullable=False, default=0),
    sa.Column("rate_per_minute", sa.Integer, nullable=False),
    sa.Column("daily_quota", sa.Integer, nullable=False),
    sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
    sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # active | suspended | revoked
    sa.Column("status_reason", sa.Text, nullable=True),
    sa.Column("granted_by", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_scopes_enterprise", "enterprise"),
)

budget_charges = sa.Table(
    "budget_charges",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("scope_id", sa.String(64), sa.ForeignKey("scopes.id"), nullable=False),
    sa.Column("epsilon_nano", sa.BigInteger, nullable=False),
    sa.Column("delta_atto", sa.BigInteger, nullable=False, default=0),
    sa.Column("query_key", sa.String(64), nullable=False),
    sa.Column("request_id", sa.String(256), nullable=True),  # the call's jti
    sa.Column("audit_index", sa.BigInteger, nullable=True),  # set once the entry exists
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_budget_charges_scope", "scope_id"),
)

released_answers = sa.Table(
    "released_answers",
    metadata,
    sa.Column("scope_id", sa.String(64), sa.ForeignKey("scopes.id"), primary_key=True),
    sa.Column("query_key", sa.String(64), primary_key=True),
    sa.Column("answer", sa.Text, nullable=False),  # JSON of the released answer
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

rate_counters = sa.Table(
    "rate_counters",
    metadata,
    sa.Column("scope_id", sa.String(64), primary_key=True),
    sa.Column("window", sa.String(8), primary_key=True),  # minute | day
    sa.Column("window_start", sa.BigInteger, primary_key=True),  # unix seconds
    sa.Column("count", sa.BigInteger, nullable=False),
)

console_sessions = sa.Table(
    "console_sessions",
    metadata,
    # SHA-256 (hex) of the session cookie's secret: the store never holds the secret.
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("principal", sa.String(128), sa.ForeignKey("principals.id"), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("audit_index", sa.BigInteger, nullable=False),  # the sign-in's entry
)

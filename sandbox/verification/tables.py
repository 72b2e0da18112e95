"""The verification package's control-plane table, on its own ``MetaData``.

``verification_probes`` holds, per scope and time bucket, one row per distinct
subject key (as a keyed hash, never the key) with how often it was found and
missed. Enumeration detection (``sandbox.verification.enumeration``) reads the
buckets of the sliding window; older buckets are purged.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

verification_probes = sa.Table(
    "verification_probes",
    metadata,
    sa.Column("scope_id", sa.String(128), primary_key=True),
    # floor(unix time / bucket_s): the window is a run of consecutive buckets.
    sa.Column("bucket", sa.BigInteger, primary_key=True),
    sa.Column("key_hash", sa.String(64), primary_key=True),  # hex HMAC-SHA-256
    sa.Column("hits", sa.Integer, nullable=False),
    sa.Column("misses", sa.Integer, nullable=False),
)
sa.Index("ix_verification_probes_bucket", verification_probes.c.bucket)

# One row per review period: the platform writes one review entry per period, whichever
# process gets there first (sandbox/actions/review.py).
enumeration_reviews = sa.Table(
    "enumeration_reviews",
    metadata,
    sa.Column("period", sa.BigInteger, primary_key=True),
    sa.Column("audit_index", sa.BigInteger, nullable=False),
)

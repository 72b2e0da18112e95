"""Enumeration detection for verification calls (DESIGN §9), as pure functions.

An honest caller verifies subjects it already knows: most keys it sends exist, and
it sends each a few times at most. A caller enumerating the key space (walking
identity numbers to find real people, say) sends many distinct keys, nearly all of
which match nothing. So, per scope and within a sliding window:

- flag when at least ``min_keys`` distinct keys were probed and the share of them
  never found reaches ``miss_ratio``, or — however many known keys dilute them —
  when the distinct keys never found reach ``unknown_keys``;
- suspend (reversibly: the operator may resume the scope) when the distinct keys of a
  window flagged by its ratio reach ``suspend_keys``, or the unknown keys reach
  ``suspend_unknown_keys``.

The platform reviews every scope's window on a fixed schedule
(``sandbox/actions/review.py``), never during a caller's request: when and how often
the review is written cannot depend on whether a probed subject exists (DESIGN
invariant 8).

A key counts as found when it matched a record, whatever its checks answered: the
platform knows this internally; the caller only ever sees ``false`` for both. Keys
are stored only as keyed hashes (HMAC-SHA-256 with a per-deployment secret) of the
normalised key, so the counters reveal nothing about who was looked up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass

from products.manifest import Scalar
from sandbox.settings import Settings

MIN_SECRET_BYTES = 16


@dataclass(frozen=True)
class EnumerationPolicy:
    """Thresholds of enumeration detection (defaults from ``Settings``)."""

    window_s: int = 600
    min_keys: int = 200
    miss_ratio: float = 0.8
    suspend_keys: int = 500
    unknown_keys: int = 100
    suspend_unknown_keys: int = 300
    bucket_s: int = 60  # granularity of the stored counters; the window slides by it
    review_s: int = 60  # the platform reviews the windows once per this period

    def __post_init__(self) -> None:
        if not (0 < self.bucket_s <= self.window_s and self.window_s % self.bucket_s == 0):
            raise ValueError("window_s must be a positive multiple of bucket_s")
        if not 0.0 < self.miss_ratio <= 1.0:
            raise ValueError("miss_ratio must be in (0, 1]")
        if not 1 <= self.min_keys <= self.suspend_keys:
            raise ValueError("need 1 <= min_keys <= suspend_keys")
        if not 1 <= self.unknown_keys <= self.suspend_unknown_keys:
            raise ValueError("need 1 <= unknown_keys <= suspend_unknown_keys")
        if self.review_s < 1:
            raise ValueError("review_s must be at least 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> EnumerationPolicy:
        """Return the policy configured by ``SANDBOX_ENUMERATION_*`` settings."""
        window = settings.enumeration_window_s
        return cls(
            window_s=window,
            min_keys=settings.enumeration_min_keys,
            miss_ratio=settings.enumeration_miss_ratio,
            suspend_keys=settings.enumeration_suspend_keys,
            unknown_keys=settings.enumeration_unknown_keys,
            suspend_unknown_keys=settings.enumeration_suspend_unknown_keys,
            review_s=settings.enumeration_review_s,
            bucket_s=max(1, window // 10) if window % 10 == 0 else window,
        )


@dataclass(frozen=True)
class WindowStats:
    """What one scope probed within the window."""

    distinct_keys: int  # distinct subject keys looked up
    missed_keys: int  # of those, keys that matched no record in any lookup
    lookups: int  # lookups (a batch counts each item)

    @property
    def miss_ratio(self) -> float:
        return self.missed_keys / self.distinct_keys if self.distinct_keys else 0.0


@dataclass(frozen=True)
class Verdict:
    """The decision for a scope: ``reason`` explains a flag (empty otherwise)."""

    flag: bool
    suspend: bool
    reason: str = ""


def assess(stats: WindowStats, policy: EnumerationPolicy) -> Verdict:
    """Return whether ``stats`` look like enumeration (flag) and warrant suspension."""
    by_ratio = stats.distinct_keys >= policy.min_keys and stats.miss_ratio >= policy.miss_ratio
    by_count = stats.missed_keys >= policy.unknown_keys
    if not (by_ratio or by_count):
        return Verdict(False, False)
    suspend = (by_ratio and stats.distinct_keys >= policy.suspend_keys) or (
        stats.missed_keys >= policy.suspend_unknown_keys
    )
    reason = (
        f"possible enumeration: {stats.distinct_keys} distinct keys probed within "
        f"{policy.window_s} s, {stats.missed_keys} ({stats.miss_ratio:.0%}) of them unknown "
        f"(thresholds: {policy.min_keys} keys and {policy.miss_ratio:.0%}, or "
        f"{policy.unknown_keys} unknown keys, to flag; {policy.suspend_keys} keys or "
        f"{policy.suspend_unknown_keys} unknown keys to suspend)"
    )
    return Verdict(True, suspend, reason)


def key_hash(
    secret: bytes, product_id: str, key_columns: Sequence[str], key: Sequence[Scalar]
) -> str:
    """Return the hex HMAC-SHA-256 of a normalised subject key under ``secret``.

    The message is the canonical JSON ``[product_id, [columns...], [values...]]``, so
    the same subject looked up through two verification products of one data product
    counts once. Raises ``ValueError`` for a secret shorter than 16 bytes.
    """
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the key-hash secret needs at least {MIN_SECRET_BYTES} bytes")
    message = json.dumps(
        [product_id, list(key_columns), list(key)], ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()

"""Keyed permutations of ``range(n)``: collision-free, random-looking identifiers.

Codes drawn independently at random collide (birthday bound: ten million 8-digit
organisation codes would repeat half a million times), and the loader rightly refuses
duplicate unique keys. Instead row ``i`` gets the code numbered ``perm(i)``: a keyed
bijection, so distinct rows get distinct codes, yet neighbouring rows look unrelated.

The bijection is a 4-round balanced Feistel network on ``[0, m) x [0, m)`` with
``m = ceil(sqrt(n))`` (addition mod ``m`` keeps each round a bijection), restricted to
``[0, n)`` by cycle walking. It needs no table, so memory stays constant at any ``n``.
"""

from __future__ import annotations

import hashlib
import math


class Permutation:
    """A bijection of ``range(n)`` determined by ``key``."""

    ROUNDS = 4

    def __init__(self, n: int, key: str) -> None:
        if n < 1:
            raise ValueError("a permutation needs a non-empty domain")
        self.n = n
        self._m = max(2, math.isqrt(n - 1) + 1)
        self._keys = [
            hashlib.blake2b(f"{key}/{r}".encode(), digest_size=16).digest()
            for r in range(self.ROUNDS)
        ]

    def _round(self, r: int, half: int) -> int:
        digest = hashlib.blake2b(half.to_bytes(8, "big"), key=self._keys[r], digest_size=8).digest()
        return int.from_bytes(digest, "big") % self._m

    def _encrypt(self, x: int) -> int:
        left, right = divmod(x, self._m)
        for r in range(self.ROUNDS):
            left, right = right, (left + self._round(r, right)) % self._m
        return left * self._m + right

    def __call__(self, i: int) -> int:
        """Return the image of ``i``. Raises ``ValueError`` outside ``range(n)``."""
        if not 0 <= i < self.n:
            raise ValueError("index outside the permutation's domain")
        x = self._encrypt(i)
        while x >= self.n:  # cycle walking: stays inside [0, n) and stays a bijection
            x = self._encrypt(x)
        return x

"""A compact set of the dedup keys a memory frontier has seen.

It stores no key, only a 64-bit hash of each (Python's `hash` of the key, SipHash,
salted per process: nothing here is kept across runs), in an open-addressing table of
unsigned 64-bit integers with linear probing, grown to keep it at most two-thirds full:
8 bytes a slot, 12 to 24 bytes a key, against about 120 for a set of the key strings.

The one error is a false "seen": a new key whose hash equals that of a key already in
the set is taken for a duplicate and skipped. With n keys in the set the chance that a
given new key is skipped so is n / 2**64, about 5e-13 at ten million keys; the chance that
any key of a ten-million-URL crawl is lost this way is about 3e-6.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

_MASK64 = (1 << 64) - 1
_INITIAL_SLOTS = 1 << 12


def key_hash(key: str) -> int:
    """A key's 64-bit hash as the set stores it (0 marks an empty slot, so never 0)."""
    return (hash(key) & _MASK64) or 1


class SeenSet:
    """`add(key)` is True when `key` was not seen before. Not thread-safe: the frontier
    calls it under its lock."""

    __slots__ = ("_count", "_limit", "_mask", "_table")

    def __init__(self) -> None:
        self._table = array("Q", bytes(8 * _INITIAL_SLOTS))
        self._mask = _INITIAL_SLOTS - 1
        self._limit = _INITIAL_SLOTS * 2 // 3
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: str) -> bool:
        return self.contains_hash(key_hash(key))

    def add(self, key: str) -> bool:
        return self.add_hash(key_hash(key))

    def contains_hash(self, h: int) -> bool:
        table, mask = self._table, self._mask
        i = h & mask
        while True:
            value = table[i]
            if value == h:
                return True
            if value == 0:
                return False
            i = (i + 1) & mask

    def add_hash(self, h: int) -> bool:
        """`h` from `key_hash`: never 0."""
        table, mask = self._table, self._mask
        i = h & mask
        while True:
            value = table[i]
            if value == h:
                return False
            if value == 0:
                table[i] = h
                self._count += 1
                if self._count > self._limit:
                    self._grow()
                return True
            i = (i + 1) & mask

    def sorted_hashes(self, bits: int = 4) -> Iterator[list[int]]:
        """Every hash in the set in ascending order, in 2**bits sorted lists: spread first
        by their top bits into arrays, so that at most one list of Python ints (a
        1/2**bits share) is held at a time."""
        shift = 64 - bits
        buckets = [array("Q") for _ in range(1 << bits)]
        for h in self._table:
            if h:
                buckets[h >> shift].append(h)
        for i, bucket in enumerate(buckets):
            buckets[i] = array("Q")
            yield sorted(bucket)

    def clear(self) -> None:
        """Empty the set, keeping its table's size (it will fill again)."""
        self._table = array("Q", bytes(8 * len(self._table)))
        self._count = 0

    def _grow(self) -> None:
        slots = len(self._table) * 2
        table = array("Q", bytes(8 * slots))
        mask = slots - 1
        for h in self._table:
            if h:
                i = h & mask
                while table[i]:
                    i = (i + 1) & mask
                table[i] = h
        self._table, self._mask, self._limit = table, mask, slots * 2 // 3

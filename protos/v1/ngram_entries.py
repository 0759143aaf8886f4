"""The n-gram entries of ``VectorColumns.ngram_entry_le32`` (``vectors.proto``), defined once for both ends.

One little-endian uint32 per entry: the bucket in the low :data:`BUCKET_BITS` bits, the count (1 to
:data:`MAX_COUNT`) above.  A larger count goes as several entries of the same bucket, which add up (a
count above 2**32 - 1 is sent as 2**32 - 1); a count of 0 is not sent.  The sensor packs
(``sensor/wire.py``), the service unpacks (``service/serde.py``).

>>> raw, lengths = pack(np.array([1, 258, 7]), np.array([3, 32767, 0]), [2, 1])
>>> raw.hex(), lengths.tolist()
('010006000201feff', [2, 0])
>>> [a.tolist() for a in unpack(bytes.fromhex('010006000201feff'))]
[[1, 258], [3, 32767]]
>>> raw, lengths = pack(np.array([5]), np.array([70000]), [1])
>>> [a.tolist() for a in unpack(raw)], lengths.tolist()
([[5, 5, 5], [32767, 32767, 4466]], [3])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BUCKET_BITS = 17
MAX_COUNT = (1 << (32 - BUCKET_BITS)) - 1  # 32767
BUCKET_MASK = (1 << BUCKET_BITS) - 1
#: A count above this is sent as this (the kernel's counters are 64-bit; no window comes near it).
MAX_TOTAL = (1 << 32) - 1


def pack(buckets: np.ndarray, counts: np.ndarray, lengths: Sequence[int] | np.ndarray) -> tuple[bytes, np.ndarray]:
    """The entry bytes of equally long integer arrays ``buckets`` and ``counts`` (``lengths[i]`` entries of
    window ``i``, window after window), and how many entries each window has in them (int64).

    ``ValueError`` for a negative count or a bucket outside ``[0, 2**BUCKET_BITS)``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(buckets) != len(counts) or int(lengths.sum()) != len(buckets):
        raise ValueError(f"{len(buckets)} buckets, {len(counts)} counts and lengths adding up to {int(lengths.sum())}")
    if not len(buckets):
        return b"", lengths
    if int(buckets.min()) < 0 or int(buckets.max()) > BUCKET_MASK:
        raise ValueError(f"an n-gram bucket outside [0, 2**{BUCKET_BITS})")
    if int(counts.min()) < 1 or int(counts.max()) > MAX_COUNT:  # (rare: split, drop or refuse)
        buckets, counts, lengths = _split(buckets, counts, lengths)
    words = buckets.astype(np.uint32) | (counts.astype(np.uint32) << BUCKET_BITS)
    return words.astype("<u4", copy=False).tobytes(), lengths


def _split(buckets: np.ndarray, counts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries whose counts are all in 1..MAX_COUNT: a larger count split into several, a count of 0 left out."""
    if int(counts.min()) < 0:
        raise ValueError(f"a negative n-gram count ({int(counts.min())})")
    counts = np.minimum(counts, MAX_TOTAL).astype(np.int64)
    pieces = -(-counts // MAX_COUNT)  # ceil: 0 for a count of 0
    out_buckets = np.repeat(buckets, pieces)
    out_counts = np.full(len(out_buckets), MAX_COUNT, dtype=np.int64)
    last = np.cumsum(pieces)[pieces > 0] - 1  # each split entry's last piece carries the remainder
    out_counts[last] = counts[pieces > 0] - (pieces[pieces > 0] - 1) * MAX_COUNT
    window = np.repeat(np.arange(len(lengths)), lengths)
    return out_buckets, out_counts, np.bincount(window, weights=pieces, minlength=len(lengths)).astype(np.int64)


def unpack(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Buckets and counts (uint32 arrays) of entry bytes; ``ValueError`` saying why for bytes that are not
    whole entries or an entry with count 0."""
    if len(raw) % 4:
        raise ValueError(f"ngram_entry_le32 has {len(raw)} bytes: not whole 4-byte entries")
    entries = np.frombuffer(raw, "<u4")
    if len(entries) and int(entries.min()) <= BUCKET_MASK:  # a count field of 0
        first = int(np.argmax(entries <= BUCKET_MASK))
        raise ValueError(f"ngram_entry_le32 entry {first} has count 0 (counts are 1..{MAX_COUNT})")
    return entries & BUCKET_MASK, entries >> BUCKET_BITS

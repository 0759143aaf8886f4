"""The n-gram entry form of ``VectorColumns.ngram_entry_le32`` (``vectors.proto``), defined once for both ends.

One little-endian uint32 per entry: the bucket in the low :data:`BUCKET_BITS` bits, the count (1 to
:data:`MAX_COUNT`) above.  The sensor packs (``sensor/wire.py``), the service unpacks (``service/serde.py``).

>>> pack(np.array([1, 258], dtype=np.uint32), np.array([3, 32767], dtype=np.uint32)).hex()
'010006000201feff'
>>> [a.tolist() for a in unpack(bytes.fromhex('010006000201feff'))]
[[1, 258], [3, 32767]]
"""

from __future__ import annotations

import numpy as np

BUCKET_BITS = 17
MAX_COUNT = (1 << (32 - BUCKET_BITS)) - 1  # 32767
BUCKET_MASK = (1 << BUCKET_BITS) - 1


def pack(buckets: np.ndarray, counts: np.ndarray) -> bytes | None:
    """The entry form of equally long uint32 ``buckets`` and ``counts``; ``None`` when an entry does not fit
    (a count outside 1..MAX_COUNT, a bucket at or above 2**BUCKET_BITS)."""
    if not len(buckets):
        return b""
    if int(buckets.max()) > BUCKET_MASK or int(counts.min()) < 1 or int(counts.max()) > MAX_COUNT:
        return None
    return (buckets | (counts << BUCKET_BITS)).astype("<u4", copy=False).tobytes()


def unpack(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Buckets and counts (uint32 arrays) of entry-form bytes; ``ValueError`` saying why for bytes that are
    not whole entries or an entry with count 0."""
    if len(raw) % 4:
        raise ValueError(f"ngram_entry_le32 has {len(raw)} bytes: not whole 4-byte entries")
    entries = np.frombuffer(raw, "<u4")
    if len(entries) and int(entries.min()) <= BUCKET_MASK:  # a count field of 0
        first = int(np.argmax(entries <= BUCKET_MASK))
        raise ValueError(f"ngram_entry_le32 entry {first} has count 0 (the entry form's counts are 1..{MAX_COUNT})")
    return entries & BUCKET_MASK, entries >> BUCKET_BITS

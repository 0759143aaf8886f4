"""The per-window matrices and syscall entries of ``VectorColumns`` (``vectors.proto``), defined once for both ends.

Per-window numbers as little-endian matrices, one row per window (row-major), in the column order of
:data:`F64_COLUMNS` (``window_f64_le``: float64, 168 bytes a window) and :data:`U32_COLUMNS`
(``window_u32_le``: uint32, 24 bytes a window); the syscall entries as uint16 name indices
(``syscall_name_index_le16``) and float64 counts (``syscall_count_f64_le``).  The sensor packs
(``sensor/wire.py``), the service unpacks (``service/serde.py``); the unpackers raise ``ValueError`` saying
why for bytes that do not fit.

>>> rows = np.zeros((2, len(F64_COLUMNS)))
>>> rows[:, :3] = [[100.0, 10.0, -1.0], [110.0, 10.0, 5.0]]
>>> raw = pack_f64(rows)
>>> len(raw), unpack_f64(raw, 2)[:, :3].tolist()
(336, [[100.0, 10.0, -1.0], [110.0, 10.0, 5.0]])
>>> unpack_f64(raw[:-8], 2)
Traceback (most recent call last):
ValueError: window_f64_le has 328 bytes: not whole 168-byte rows (21 float64 columns)
>>> unpack_u32(pack_u32([[0, 2, 0, 0, 0, 0]]), 2)
Traceback (most recent call last):
ValueError: window_u32_le has 1 rows for 2 windows (count)
>>> index, counts = pack_syscalls([0, 1, 0], [3, 2.5, 7])
>>> index.hex(), [a.tolist() for a in unpack_syscalls(index, counts)]
('000001000000', [[0, 1, 0], [3.0, 2.5, 7.0]])
>>> pack_syscalls([MAX_SYSCALL_NAMES], [1])
Traceback (most recent call last):
ValueError: syscall name index 65536: a batch has at most 65536 syscall names
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: ``window_f64_le``'s columns: the window, the container's age at its start, then the 18 counters in the
#: order of ``baseliner.models.block.COUNTERS`` (a test holds the two to the same order).
F64_COLUMNS: tuple[str, ...] = (
    "window_start", "window_seconds", "container_age_seconds",
    "execs", "forks", "exits", "connects", "connects_failed", "accepts", "listens", "bytes_sent",
    "bytes_received", "packets_sent", "packets_received", "remote_addresses", "remote_ports",
    "dns_queries", "write_opens", "sensitive_writes", "unresolved_writes", "events_lost",
)
#: Where the counters start in a ``window_f64_le`` row.
FIRST_COUNTER = 3
#: ``window_u32_le``'s columns: the index into the identity table, then each list's length in the window.
U32_COLUMNS: tuple[str, ...] = (
    "identity", "syscall_lengths", "ngram_lengths", "executable_lengths", "endpoint_lengths",
    "sensitive_path_lengths",
)
#: What uint16 indices can name: the most syscall names a batch can have (the service reads far fewer).
MAX_SYSCALL_NAMES = 1 << 16

_F64 = np.dtype("<f8")
_U32 = np.dtype("<u4")
_U16 = np.dtype("<u2")


def _pack(rows: np.ndarray | Sequence[Sequence[float]], dtype: np.dtype, columns: int) -> bytes:
    m = np.asarray(rows, dtype=dtype)
    if m.size == 0:
        return b""
    if m.ndim != 2 or m.shape[1] != columns:
        raise ValueError(f"rows of shape {m.shape}, expected (windows, {columns})")
    return m.tobytes()


def pack_f64(rows: np.ndarray | Sequence[Sequence[float]]) -> bytes:
    """``window_f64_le`` of ``rows`` (one row of ``len(F64_COLUMNS)`` values per window)."""
    return _pack(rows, _F64, len(F64_COLUMNS))


def pack_u32(rows: np.ndarray | Sequence[Sequence[int]]) -> bytes:
    """``window_u32_le`` of ``rows`` (one row of ``len(U32_COLUMNS)`` values per window); ``OverflowError``
    for a value outside uint32."""
    return _pack(rows, _U32, len(U32_COLUMNS))


def _unpack(raw: bytes, count: int, field: str, dtype: np.dtype, columns: int) -> np.ndarray:
    row_bytes = dtype.itemsize * columns
    if len(raw) % row_bytes:
        raise ValueError(
            f"{field} has {len(raw)} bytes: not whole {row_bytes}-byte rows ({columns} {_NAMES[dtype]} columns)"
        )
    rows = len(raw) // row_bytes
    if rows != count:
        raise ValueError(f"{field} has {rows} rows for {count} windows (count)")
    return np.frombuffer(raw, dtype).reshape(rows, columns)


_NAMES = {_F64: "float64", _U32: "uint32", _U16: "uint16"}


def unpack_f64(raw: bytes, count: int) -> np.ndarray:
    """``window_f64_le`` as a read-only ``(count, len(F64_COLUMNS))`` little-endian float64 view of ``raw``;
    ``ValueError`` for bytes that are not whole rows, or not ``count`` of them."""
    return _unpack(raw, count, "window_f64_le", _F64, len(F64_COLUMNS))


def unpack_u32(raw: bytes, count: int) -> np.ndarray:
    """``window_u32_le`` as a read-only ``(count, len(U32_COLUMNS))`` little-endian uint32 view of ``raw``;
    ``ValueError`` for bytes that are not whole rows, or not ``count`` of them."""
    return _unpack(raw, count, "window_u32_le", _U32, len(U32_COLUMNS))


def pack_syscalls(index: np.ndarray | Sequence[int], counts: np.ndarray | Sequence[float]) -> tuple[bytes, bytes]:
    """``syscall_name_index_le16`` and ``syscall_count_f64_le`` of equally long ``index`` and ``counts``;
    ``ValueError`` for an index that uint16 cannot hold (a batch of more than :data:`MAX_SYSCALL_NAMES` names)."""
    idx = np.asarray(index, dtype=np.int64)
    if len(idx) != len(counts):
        raise ValueError(f"{len(idx)} syscall name indices but {len(counts)} counts")
    if len(idx) and (int(idx.max()) >= MAX_SYSCALL_NAMES or int(idx.min()) < 0):
        bad = int(idx.max()) if int(idx.max()) >= MAX_SYSCALL_NAMES else int(idx.min())
        raise ValueError(f"syscall name index {bad}: a batch has at most {MAX_SYSCALL_NAMES} syscall names")
    return idx.astype(_U16).tobytes(), np.asarray(counts, dtype=_F64).tobytes()


def unpack_syscalls(raw_index: bytes, raw_count: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Name indices (uint16) and counts (float64), read-only little-endian views; ``ValueError`` saying why
    for bytes that are not whole entries or not as many entries in both."""
    if len(raw_index) % _U16.itemsize or len(raw_count) % _F64.itemsize:
        raise ValueError(
            f"syscall_name_index_le16 has {len(raw_index)} bytes and syscall_count_f64_le {len(raw_count)}: "
            "not whole 2-byte and 8-byte entries"
        )
    index = np.frombuffer(raw_index, _U16)
    counts = np.frombuffer(raw_count, _F64)
    if len(index) != len(counts):
        raise ValueError(
            f"syscall_name_index_le16 has {len(index)} entries but syscall_count_f64_le {len(counts)}"
        )
    return index, counts

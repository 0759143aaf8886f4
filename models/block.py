"""A batch of windows as columns: the form the service scores.

A :class:`VectorBlock` holds ``n`` windows as numpy arrays (row ``i`` of every array is window ``i``)
plus a few small tables (the distinct identities, syscall names and endpoints of the batch).  Lists of
variable length (syscall counts, n-gram counts, executables, endpoints, sensitive paths) are stored the
CSR way: a pointer array of ``n + 1`` offsets into one flat array.

The gRPC edge decodes the wire's ``VectorColumns`` straight into a block (a few array copies per batch);
``from_vectors`` builds one from :class:`~baseliner.models.vector.FeatureVector` objects (evaluation, notebooks,
tests, the wire's one-message-per-window form), and :meth:`VectorBlock.vector` turns one row back into a
``FeatureVector`` where a window is needed on its own (explanations, feedback).

>>> from baseliner.models.vector import FeatureVector, Identity
>>> ident = Identity("node-1", "c1", "nginx", "1.27")
>>> b = VectorBlock.from_vectors([FeatureVector(ident, 1.7e9, 10.0, {"read": 5, "write": 2}, execs=1),
...                              FeatureVector(ident, 1.7e9 + 10, 10.0, {"read": 7})])
>>> len(b), b.counters[:, COUNTER_INDEX["execs"]].tolist(), b.vector(1).syscalls
(2, [1.0, 0.0], {'read': 7.0})
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from typing import Any, Generic, TypeVar

import numpy as np
from baseliner.models.vector import Endpoint, FeatureVector, Identity

#: The per-window counters of a block, in column order (``VectorBlock.counters``).
COUNTERS: tuple[str, ...] = (
    "execs", "forks", "exits", "connects", "connects_failed", "accepts", "listens", "bytes_sent",
    "bytes_received", "packets_sent", "packets_received", "remote_addresses", "remote_ports",
    "dns_queries", "write_opens", "sensitive_writes", "unresolved_writes", "events_lost",
)
COUNTER_INDEX: dict[str, int] = {name: j for j, name in enumerate(COUNTERS)}

T = TypeVar("T")
_I64 = np.int64
_F64 = np.float64


def csr_take(ptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Select ``rows`` of a CSR layout: ``(new_ptr, entries)`` where ``entries`` index the flat array.

    >>> new_ptr, entries = csr_take(np.array([0, 2, 2, 5]), np.array([2, 0]))
    >>> new_ptr.tolist(), entries.tolist()
    ([0, 3, 5], [2, 3, 4, 0, 1])
    """
    starts = ptr[rows]
    lengths = ptr[rows + 1] - starts
    new_ptr = np.zeros(len(rows) + 1, dtype=_I64)
    np.cumsum(lengths, out=new_ptr[1:])
    total = int(new_ptr[-1])
    if total == 0:
        return new_ptr, np.zeros(0, dtype=_I64)
    # entry k of new row r sits at starts[r] + (k - new_ptr[r])
    entries = np.arange(total, dtype=_I64) + (starts - new_ptr[:-1]).repeat(lengths)
    return new_ptr, entries


def row_ids(ptr: np.ndarray) -> np.ndarray:
    """The row of every flat entry of a CSR layout.

    >>> row_ids(np.array([0, 2, 2, 3])).tolist()
    [0, 0, 2]
    """
    return np.arange(len(ptr) - 1, dtype=_I64).repeat(ptr[1:] - ptr[:-1])


def segment_sums(values: np.ndarray, ptr: np.ndarray) -> np.ndarray:
    """The sum of every row's entries of a CSR layout (0 for an empty row), in one pass over ``values``.

    >>> segment_sums(np.array([1.0, 2.0, 4.0]), np.array([0, 2, 2, 3, 3])).tolist()
    [3.0, 0.0, 4.0, 0.0]
    """
    lengths = ptr[1:] - ptr[:-1]
    out = np.zeros(len(lengths), dtype=np.result_type(values.dtype, np.float64))
    full = lengths > 0
    if full.all():
        out[:] = np.add.reduceat(values, ptr[:-1])
    elif full.any():
        # each non-empty row's segment runs to the next non-empty row's start: its own end
        out[full] = np.add.reduceat(values, ptr[:-1][full])
    return out


def dictionary(items: Iterable[T]) -> tuple[list[T], list[int]]:
    """The distinct ``items`` in first-seen order, and the index of each item among them.

    >>> dictionary(["read", "write", "read"])
    (['read', 'write'], [0, 1, 0])
    """
    index: dict[T, int] = {}
    positions = [index.setdefault(x, len(index)) for x in items]
    return list(index), positions


def lengths_to_ptr(lengths: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    ptr = np.zeros(n + 1, dtype=_I64)
    if len(lengths):
        np.cumsum(np.asarray(lengths, dtype=_I64), out=ptr[1:])
    return ptr


@dataclass(slots=True)
class VectorBlock:
    """``n`` windows as columns (see the module docstring)."""

    identities: Sequence[Identity]  # distinct identities (a list or a tuple; never changed in place)
    ident: np.ndarray  # (n,) int64: row -> identities index
    index: np.ndarray  # (n,) int64: row -> position in the batch it came in (acknowledgements name it)
    window_start: np.ndarray  # (n,) float64, event time
    window_seconds: np.ndarray  # (n,) float64
    counters: np.ndarray  # (n, len(COUNTERS)) float64
    complete: np.ndarray  # (n,) bool
    container_exited: np.ndarray  # (n,) bool
    age: np.ndarray  # (n,) float64: container age at window start, < 0 unknown (FeatureVector.seconds_since_start)
    syscall_names: list[str]
    sc_ptr: np.ndarray  # (n + 1,) int64
    sc_name: np.ndarray  # int64 indices into syscall_names
    sc_count: np.ndarray  # float64
    ng_ptr: np.ndarray  # (n + 1,) int64
    ng_bucket: np.ndarray  # int64 global bucket indices (baseliner.models.ngrams)
    ng_count: np.ndarray  # float64
    exe_ptr: np.ndarray
    executables: list[str]
    ep_ptr: np.ndarray
    ep_index: np.ndarray  # int64 indices into endpoints
    endpoints: list[Endpoint]  # distinct endpoints
    path_ptr: np.ndarray
    sensitive_paths: list[str]
    # per-batch values derived from the tables above, shared by every block taken from this one
    shared: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.window_start)

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def empty(cls) -> VectorBlock:
        return cls.from_vectors([])

    @classmethod
    def from_vectors(cls, vectors: Sequence[FeatureVector], index: Sequence[int] | None = None) -> VectorBlock:
        """A block of ``vectors`` (``index``: their positions in the batch; default ``0..n-1``)."""
        n = len(vectors)
        identities, ident_index = dictionary(v.identity for v in vectors)
        counters = np.fromiter(
            chain.from_iterable(map(_COUNTERS_GET, vectors)), dtype=_F64, count=n * len(COUNTERS)
        ).reshape(n, len(COUNTERS))
        calls = [v.syscalls for v in vectors]
        sc_ptr = lengths_to_ptr([len(c) for c in calls], n)
        names, name_index = dictionary(name for c in calls for name in c)
        sc_count = np.fromiter(chain.from_iterable(c.values() for c in calls), dtype=_F64, count=int(sc_ptr[-1]))
        grams = [v.ngrams for v in vectors]
        ng_ptr = lengths_to_ptr([len(g) for g in grams], n)
        ng_bucket = np.fromiter(chain.from_iterable(grams), dtype=_I64, count=int(ng_ptr[-1]))
        ng_count = np.fromiter(chain.from_iterable(g.values() for g in grams), dtype=_F64, count=int(ng_ptr[-1]))
        endpoints, ep_idx = dictionary(ep for v in vectors for ep in v.endpoints)
        return cls(
            identities=identities,
            ident=np.asarray(ident_index, dtype=_I64),
            index=np.arange(n, dtype=_I64) if index is None else np.asarray(index, dtype=_I64),
            window_start=np.fromiter((v.window_start for v in vectors), dtype=_F64, count=n),
            window_seconds=np.fromiter((v.window_seconds for v in vectors), dtype=_F64, count=n),
            counters=counters,
            complete=np.fromiter((bool(v.complete) for v in vectors), dtype=bool, count=n),
            container_exited=np.fromiter((bool(v.container_exited) for v in vectors), dtype=bool, count=n),
            age=np.fromiter((v.seconds_since_start for v in vectors), dtype=_F64, count=n),
            syscall_names=names,
            sc_ptr=sc_ptr,
            sc_name=np.asarray(name_index, dtype=_I64),
            sc_count=sc_count,
            ng_ptr=ng_ptr,
            ng_bucket=ng_bucket,
            ng_count=ng_count,
            exe_ptr=lengths_to_ptr([len(v.executables) for v in vectors], n),
            executables=[e for v in vectors for e in v.executables],
            ep_ptr=lengths_to_ptr([len(v.endpoints) for v in vectors], n),
            ep_index=np.asarray(ep_idx, dtype=_I64),
            endpoints=endpoints,
            path_ptr=lengths_to_ptr([len(v.sensitive_paths) for v in vectors], n),
            sensitive_paths=[p for v in vectors for p in v.sensitive_paths],
        )

    # -- selection -------------------------------------------------------------------------------

    def take(self, rows: np.ndarray | slice) -> VectorBlock:
        """The block of ``rows`` (an index array or a slice), in that order."""
        if isinstance(rows, slice):
            rows = np.arange(len(self), dtype=_I64)[rows]
        rows = np.asarray(rows, dtype=_I64)
        sc_ptr, sc = csr_take(self.sc_ptr, rows)
        ng_ptr, ng = csr_take(self.ng_ptr, rows)
        ep_ptr, ep = csr_take(self.ep_ptr, rows)
        exe_ptr, exe = csr_take(self.exe_ptr, rows) if self.executables else (_zero_ptr(len(rows)), None)
        path_ptr, path = csr_take(self.path_ptr, rows) if self.sensitive_paths else (_zero_ptr(len(rows)), None)
        return VectorBlock(
            identities=self.identities,
            ident=self.ident[rows],
            index=self.index[rows],
            window_start=self.window_start[rows],
            window_seconds=self.window_seconds[rows],
            counters=self.counters[rows],
            complete=self.complete[rows],
            container_exited=self.container_exited[rows],
            age=self.age[rows],
            syscall_names=self.syscall_names,
            sc_ptr=sc_ptr,
            sc_name=self.sc_name[sc],
            sc_count=self.sc_count[sc],
            ng_ptr=ng_ptr,
            ng_bucket=self.ng_bucket[ng],
            ng_count=self.ng_count[ng],
            exe_ptr=exe_ptr,
            executables=[self.executables[k] for k in exe.tolist()] if exe is not None else [],
            ep_ptr=ep_ptr,
            ep_index=self.ep_index[ep],
            endpoints=self.endpoints,
            path_ptr=path_ptr,
            sensitive_paths=[self.sensitive_paths[k] for k in path.tolist()] if path is not None else [],
            shared=self.shared,
        )

    @classmethod
    def concat(cls, blocks: Sequence[VectorBlock], names: NameTable | None = None) -> VectorBlock:
        """One block of ``blocks``' rows, one after the other (their tables joined, indices shifted).

        ``index`` keeps each row's position in its own batch.  With ``names``, the syscall names of every
        block are coded in that table and the joined block's ``syscall_names`` is the table's list (the
        same list call after call, whichever batches are joined); without, the blocks' names are joined.

        >>> from baseliner.models.vector import FeatureVector, Identity
        >>> a = VectorBlock.from_vectors([FeatureVector(Identity("n", "c1", "web"), 1.7e9, 10.0, {"read": 5})])
        >>> b = VectorBlock.from_vectors([FeatureVector(Identity("n", "c2", "db"), 1.7e9, 10.0, {"write": 2},
        ...                                             ngrams={9000: 3})])
        >>> ab = VectorBlock.concat([a, b])
        >>> len(ab), ab.identity(1).container_id, ab.row_syscalls(1), ab.vector(1).ngrams, ab.index.tolist()
        (2, 'c2', {'write': 2.0}, {9000: 3.0}, [0, 0])
        """
        if len(blocks) == 1:
            return blocks[0]
        coded = _coded_names(blocks, names) if names is not None else None
        return cls(
            identities=[i for b in blocks for i in b.identities],
            ident=_shifted(blocks, "ident", "identities"),
            index=_cat(blocks, "index"),
            window_start=_cat(blocks, "window_start"),
            window_seconds=_cat(blocks, "window_seconds"),
            counters=_cat(blocks, "counters"),
            complete=_cat(blocks, "complete"),
            container_exited=_cat(blocks, "container_exited"),
            age=_cat(blocks, "age"),
            syscall_names=coded[0] if coded is not None else [x for b in blocks for x in b.syscall_names],
            sc_ptr=_joined_ptr(blocks, "sc_ptr"),
            sc_name=coded[1] if coded is not None else _shifted(blocks, "sc_name", "syscall_names"),
            sc_count=_cat(blocks, "sc_count"),
            ng_ptr=_joined_ptr(blocks, "ng_ptr"),
            ng_bucket=_cat(blocks, "ng_bucket"),
            ng_count=_cat(blocks, "ng_count"),
            exe_ptr=_joined_ptr(blocks, "exe_ptr"),
            executables=[x for b in blocks for x in b.executables],
            ep_ptr=_joined_ptr(blocks, "ep_ptr"),
            ep_index=_shifted(blocks, "ep_index", "endpoints"),
            endpoints=[x for b in blocks for x in b.endpoints],
            path_ptr=_joined_ptr(blocks, "path_ptr"),
            sensitive_paths=[x for b in blocks for x in b.sensitive_paths],
        )

    # -- rows ------------------------------------------------------------------------------------

    def identity(self, i: int) -> Identity:
        return self.identities[int(self.ident[i])]

    def row_syscalls(self, i: int) -> dict[str, float]:
        """Window ``i``'s syscall counts by name (entries naming the same syscall add up)."""
        a, b = int(self.sc_ptr[i]), int(self.sc_ptr[i + 1])
        out: dict[str, float] = {}
        names = self.syscall_names
        for j, c in zip(self.sc_name[a:b].tolist(), self.sc_count[a:b].tolist(), strict=True):
            name = names[j]
            out[name] = out.get(name, 0.0) + c
        return out

    def row_ngrams(self, i: int) -> dict[int, float]:
        a, b = int(self.ng_ptr[i]), int(self.ng_ptr[i + 1])
        out: dict[int, float] = {}
        for j, c in zip(self.ng_bucket[a:b].tolist(), self.ng_count[a:b].tolist(), strict=True):
            out[j] = out.get(j, 0.0) + c
        return out

    def row_executables(self, i: int) -> list[str]:
        return self.executables[int(self.exe_ptr[i]) : int(self.exe_ptr[i + 1])]

    def row_endpoints(self, i: int) -> list[Endpoint]:
        eps = self.endpoints
        return [eps[j] for j in self.ep_index[int(self.ep_ptr[i]) : int(self.ep_ptr[i + 1])].tolist()]

    def row_sensitive_paths(self, i: int) -> list[str]:
        return self.sensitive_paths[int(self.path_ptr[i]) : int(self.path_ptr[i + 1])]

    def vector(self, i: int) -> FeatureVector:
        """Window ``i`` as a :class:`FeatureVector`."""
        c = dict(zip(COUNTERS, self.counters[i].tolist(), strict=True))
        return FeatureVector(
            identity=self.identity(i),
            window_start=float(self.window_start[i]),
            window_seconds=float(self.window_seconds[i]),
            syscalls=self.row_syscalls(i),  # type: ignore[arg-type]
            ngrams=self.row_ngrams(i),  # type: ignore[arg-type]
            executables=self.row_executables(i),
            endpoints=self.row_endpoints(i),
            sensitive_paths=self.row_sensitive_paths(i),
            complete=bool(self.complete[i]),
            container_exited=bool(self.container_exited[i]),
            seconds_since_start=float(self.age[i]),
            **c,
        )

    def vectors(self) -> list[FeatureVector]:
        return [self.vector(i) for i in range(len(self))]

    def containers(self) -> list[str]:
        """``node/container_id`` of each distinct identity (index like ``identities``).

        Made once per batch: the blocks :meth:`take` makes of one batch share the result.
        """
        keys = self.shared.get("containers")
        if keys is None:
            keys = self.shared["containers"] = [f"{i.node}/{i.container_id}" for i in self.identities]
        return keys


class NameTable:
    """A growing dictionary of syscall names, for the blocks that one owner joins (:meth:`VectorBlock.concat`).

    A service joins the batches of the sensors that sent at the same time; with their names joined too,
    a call's name list would be new every call (a few hundred names, repeated), and what is derived per
    name list (feature columns, each baseline's novel names) would be recomputed every call.  Coded in
    one table instead, the joined blocks share the table's list, which only grows (appended to; indices
    stay valid) until it holds ``limit`` names: then the table starts over with a new list (blocks
    already joined keep theirs).

    >>> t = NameTable()
    >>> t.codes(["read", "write"]).tolist(), t.codes(["openat", "read"]).tolist(), t.names
    ([0, 1], [2, 0], ['read', 'write', 'openat'])
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        self._codes: dict[tuple[str, ...], np.ndarray] = {}  # a block's name list -> its codes here

    def codes(self, names: Sequence[str]) -> np.ndarray:
        """The table's index of each of ``names`` (new names are added; int64)."""
        key = tuple(names)
        found = self._codes.get(key)
        if found is not None:
            return found
        index = self._index
        new = len({name for name in key if name not in index})
        if len(index) + new > self.limit or len(self._codes) >= self.limit:
            self.names = []
            self._index = index = {}
            self._codes = {}
        out = np.empty(len(key), dtype=_I64)
        for j, name in enumerate(key):
            k = index.get(name)
            if k is None:
                k = index[name] = len(self.names)
                self.names.append(name)
            out[j] = k
        self._codes[key] = out
        return out


class TableMemo(Generic[T]):
    """Values derived from identity tables, remembered by the tables' content (never by object).

    A sensor's table comes back round after round (the service's decoder hands out one immutable tuple
    per distinct table): what was derived from it is found again with a lookup keyed by its length and
    its first and last identity, and an element-by-element comparison with the table remembered (cheap
    when the elements are the same objects).  A list changed in place, or another table, is not found.

    >>> from baseliner.models.vector import Identity
    >>> memo: TableMemo[str] = TableMemo()
    >>> table = [Identity("n", "c1", "web"), Identity("n", "c2", "web")]
    >>> memo.put(table, "checked")
    >>> memo.get(tuple(table)), memo.get(table[:1])
    ('checked', None)
    >>> table[1] = Identity("n", "c3", "web"); memo.get(table)
    """

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._memo: dict[tuple[int, Identity, Identity], tuple[tuple[Identity, ...], T]] = {}

    def get(self, table: Sequence[Identity]) -> T | None:
        if not table:
            return None
        content = tuple(table)  # (a tuple is itself)
        try:
            found = self._memo.get((len(content), content[0], content[-1]))
        except TypeError:  # something unhashable that is no Identity: nothing is remembered of it
            return None
        return found[1] if found is not None and found[0] == content else None

    def put(self, table: Sequence[Identity], value: T) -> None:
        if not table:
            return
        if len(self._memo) >= self.limit:
            self._memo.clear()
        content = tuple(table)
        self._memo[(len(content), content[0], content[-1])] = (content, value)

    def clear(self) -> None:
        self._memo.clear()


def _coded_names(blocks: Sequence[VectorBlock], names: NameTable) -> tuple[list[str], np.ndarray] | None:
    """The blocks' syscall entries coded in ``names``: ``(its list, the entries' codes)``, or ``None`` when
    the table started over while coding (then the blocks' names are joined instead)."""
    for _ in range(2):
        first = names.names
        codes = [names.codes(b.syscall_names) for b in blocks]
        if names.names is first:
            return first, np.concatenate([c[b.sc_name] for c, b in zip(codes, blocks, strict=True)])
    return None


def _offsets(sizes: list[int]) -> list[int]:
    return np.cumsum([0, *sizes[:-1]]).astype(_I64).tolist()


def _joined_ptr(blocks: Sequence[VectorBlock], name: str) -> np.ndarray:
    ptrs = [getattr(b, name) for b in blocks]
    shift = _offsets([int(p[-1]) for p in ptrs])
    return np.concatenate([[0], *[p[1:] + s for p, s in zip(ptrs, shift, strict=True)]]).astype(_I64)


def _cat(blocks: Sequence[VectorBlock], name: str) -> np.ndarray:
    return np.concatenate([getattr(b, name) for b in blocks])


def _shifted(blocks: Sequence[VectorBlock], name: str, table: str) -> np.ndarray:
    """Indices into each block's ``table``, as indices into the tables joined."""
    shift = _offsets([len(getattr(b, table)) for b in blocks])
    return np.concatenate([getattr(b, name) + s for b, s in zip(blocks, shift, strict=True)])


def _zero_ptr(n: int) -> np.ndarray:
    return np.zeros(n + 1, dtype=_I64)


_COUNTERS_GET: Any = attrgetter(*COUNTERS)

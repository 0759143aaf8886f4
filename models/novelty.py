"""The exact tier: things an image has never done.

Per image, bounded first-seen sets of executables, syscalls, outbound remote ports and sensitive paths
written.  A window that contains an item missing from its set is novel, whatever its rates look like.
Ephemeral ports (``>= ephemeral_start``) and inbound connections' client ports are excluded: they
change with every connection and say nothing about behaviour.  A full set stops growing and stops
flagging its kind (``saturated`` says so) rather than alarming on everything or forgetting silently.

An item becomes normal only with *support*: seen in at least ``min_windows`` learnt windows and, where
the image runs several replicas, in at least ``min_containers`` of them.  Until then it is a candidate
and still novel, so one poisoned window (or one compromised replica) during learning cannot teach the
baseline to accept an attacker's binary or port.  Items seen in start-up windows need one window:
entrypoints legitimately do things once per start.  An item seen in ``long_windows`` learnt windows
counts whatever the containers (a primary that alone does what its replicas never do).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from baseliner.models.block import VectorBlock, row_ids
from baseliner.models.vector import Endpoint

KINDS = ("executable", "syscall", "port", "sensitive_path")


@dataclass(frozen=True, slots=True)
class NovelItem:
    kind: str  # one of KINDS
    value: str

    def text(self) -> str:
        return f"new {self.kind.replace('_', ' ')} {self.value}"


class NoveltySets:
    """Bounded first-seen sets for one image.

    >>> sets = NoveltySets(capacity=100, min_windows=2)
    >>> shell = NovelItem("executable", "/bin/sh")
    >>> sets.learn_items([shell], "node-1/c1"); sets.sets["executable"]
    set()
    >>> sets.learn_items([shell], "node-1/c1"); sets.sets["executable"]
    {'/bin/sh'}
    """

    def __init__(
        self,
        capacity: int = 4096,
        ephemeral_start: int = 32768,
        min_windows: int = 1,
        min_containers: int = 1,
        long_windows: int = 20,
    ) -> None:
        self.capacity = capacity
        self.ephemeral_start = ephemeral_start
        self.min_windows = min_windows
        self.min_containers = min_containers
        self.long_windows = long_windows
        self.sets: dict[str, set[str]] = {k: set() for k in KINDS}
        # For novel_rows: per kind, the keys of the last batch's table looked up, the sets' version then and
        # the positions of the keys that were unknown (batches of one sensor repeat their tables).
        self._version = 0
        self._unknown: dict[str, tuple[tuple[str, ...], int, list[int]]] = {}
        self.saturated: dict[str, bool] = {k: False for k in KINDS}
        # (kind, item) -> [windows seen, containers seen (at most min_containers)]
        self.candidates: dict[tuple[str, str], tuple[int, list[str]]] = {}

    def learn_items(self, items: Iterable[NovelItem], container: str, startup: bool = False, replicas: int = 1) -> None:
        """Count one learnt window of ``container`` as support for ``items`` (those already known are skipped)."""
        need_windows = 1 if startup else self.min_windows
        need_containers = max(1, min(self.min_containers, replicas))
        sets = self.sets
        for novel_item in dict.fromkeys(items):  # once per window, whatever the repeats
            kind, item = novel_item.kind, novel_item.value
            known = sets[kind]
            if item in known:
                continue
            windows, containers = self.candidates.get((kind, item), (0, []))
            windows += 1
            if container not in containers and len(containers) < self.min_containers:
                containers = [*containers, container]
            supported = windows >= need_windows and len(containers) >= need_containers
            if supported or windows >= self.long_windows:
                self.candidates.pop((kind, item), None)
                self.add(kind, [item])
            elif len(self.candidates) < self.capacity or (kind, item) in self.candidates:
                self.candidates[(kind, item)] = (windows, containers)

    def add(self, kind: str, items: Iterable[str]) -> None:
        self._version += 1
        known = self.sets[kind]
        for item in items:
            if item in known:
                continue
            if len(known) >= self.capacity:
                self.saturated[kind] = True
                return
            known.add(item)

    def clear(self) -> None:
        self._version += 1
        for kind in KINDS:
            self.sets[kind].clear()
            self.saturated[kind] = False
        self.candidates.clear()

    def to_dict(self) -> dict[str, object]:
        return {
            "sets": {k: sorted(v) for k, v in self.sets.items()},
            "saturated": dict(self.saturated),
            "candidates": [[k, i, w, c] for (k, i), (w, c) in sorted(self.candidates.items())],
        }

    def load_dict(self, d: dict) -> None:
        self._version += 1
        for kind in KINDS:
            items = d["sets"].get(kind, [])
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ValueError(f"novelty set {kind!r} is not a list of strings")
            self.sets[kind] = set(items[: self.capacity])
            self.saturated[kind] = bool(d["saturated"].get(kind, False))
        self.candidates = {}
        for kind, item, windows, containers in d.get("candidates", [])[: self.capacity]:
            if kind not in KINDS or not isinstance(item, str) or not isinstance(containers, list):
                raise ValueError("novelty candidates are malformed")
            self.candidates[(kind, item)] = (int(windows), [str(c) for c in containers])


def novel_rows(
    sets: Sequence[NoveltySets], block: VectorBlock, rows: np.ndarray | None, group: np.ndarray
) -> dict[int, list[NovelItem]]:
    """The items windows ``rows`` of ``block`` (``None``: all, in order) show that their image has never
    shown, window ``rows[k]`` against ``sets[group[k]]``: ``{k: items}`` for the ``k`` that have any, items
    in the order executables, syscalls (sorted), ports, sensitive paths.

    Many images' windows at once: each distinct syscall name and endpoint of the block is looked up once
    per set, and the windows' entries are matched with array operations; only executables and sensitive
    paths (rare) are looked at one by one.

    >>> from baseliner.models.vector import Endpoint, FeatureVector, Identity
    >>> a, b = NoveltySets(), NoveltySets()
    >>> a.add("syscall", ["read"]); b.add("syscall", ["read", "write"])
    >>> v = FeatureVector(Identity("n", "c", "x"), 0.0, 5.0, {"read": 1, "write": 1},
    ...                   endpoints=[Endpoint("10.0.0.1", 22)])
    >>> blk = VectorBlock.from_vectors([v] * 2)
    >>> {k: [i.text() for i in v] for k, v in novel_rows([a, b], blk, np.array([0, 1]), np.array([0, 1])).items()}
    {0: ['new syscall write', 'new port tcp/22'], 1: ['new port tcp/22']}
    """
    out: dict[int, list[NovelItem]] = {}
    if rows is not None and not len(rows):
        return out
    at = _Windows(sets, block, rows, group)
    if block.executables:
        _one_by_one(at, "executable", block.exe_ptr, block.executables, out)
    if len(block.sc_name):
        names = block.syscall_names
        for k, j in sorted(set(_by_table(at, "syscall", names, block.sc_ptr, block.sc_name)),
                           key=lambda kj: (kj[0], names[kj[1]])):
            out.setdefault(k, []).append(NovelItem("syscall", names[j]))
    if len(block.ep_index):
        _novel_ports(at, block, out)
    if block.sensitive_paths:
        _one_by_one(at, "sensitive_path", block.path_ptr, block.sensitive_paths, out)
    return out


class _Windows:
    """Where the windows :func:`novel_rows` asks about are: window ``k`` is block row ``rows[k]`` (``pos``
    maps a block row back to ``k``, -1 for a row not asked about; ``None``: every row, ``k`` is the row) and
    its set is ``sets[group[k]]``."""

    def __init__(self, sets: Sequence[NoveltySets], block: VectorBlock, rows: np.ndarray | None,
                 group: np.ndarray) -> None:
        self.sets = sets
        self.group = group.tolist()
        self.pos: np.ndarray | None = None
        if rows is not None:
            self.pos = np.full(len(block), -1, dtype=np.int64)
            self.pos[rows] = np.arange(len(rows), dtype=np.int64)
        # rows in order and each set's rows one run (the service's usual block): set g's windows are rows
        # [runs[g], runs[g + 1]), and its entries of a CSR layout one slice
        self.runs = None
        if rows is None and len(group) and bool((group[1:] >= group[:-1]).all()):
            self.runs = np.searchsorted(group, np.arange(len(sets) + 1))
        # each block row's set (len(sets) for a row not asked about)
        self.row_set = group if self.pos is None else np.append(group, len(sets))[self.pos]

    def k_of(self, ptr: np.ndarray) -> np.ndarray:
        """``k`` of each entry of a CSR layout (-1: a row not asked about)."""
        return row_ids(ptr) if self.pos is None else self.pos[row_ids(ptr)]


def _one_by_one(at: _Windows, kind: str, ptr: np.ndarray, items: list[str], out: dict[int, list[NovelItem]]) -> None:
    for k, item in zip(at.k_of(ptr).tolist(), items, strict=True):
        if k < 0:
            continue
        s = at.sets[at.group[k]]
        if not s.saturated[kind] and item not in s.sets[kind]:
            out.setdefault(k, []).append(NovelItem(kind, item))


def _unknown(s: NoveltySets, kind: str, table: tuple[str, ...]) -> list[int]:
    """Positions of the (non-empty) keys of ``table`` that ``s`` does not know; the answer for the last table
    looked up is remembered until the set changes (batches of one sensor repeat their tables)."""
    cached = s._unknown.get(kind)
    if cached is not None and cached[1] == s._version and cached[0] == table:
        return cached[2]
    known = s.sets[kind]
    unknown = [j for j, key in enumerate(table) if key and key not in known]
    s._unknown[kind] = (table, s._version, unknown)
    return unknown


def _by_table(
    at: _Windows, kind: str, keys: Sequence[str], ptr: np.ndarray, index: np.ndarray
) -> list[tuple[int, int]]:
    """``(k, key index)`` of the entries (``keys[index[e]]``, rows by ``ptr``) whose key is new to their
    window's set, in entry order."""
    flag = np.zeros((len(at.sets) + 1, len(keys)), dtype=bool)  # (row len(sets): rows not asked about)
    table, any_unknown = tuple(keys), False
    for g, s in enumerate(at.sets):
        if not s.saturated[kind]:
            unknown = _unknown(s, kind, table)
            if unknown:
                flag[g, unknown] = any_unknown = True
    if not any_unknown:
        return []
    if at.runs is not None:  # each set's entries on their own: one lookup per entry, no per-entry row
        found: list[tuple[int, int]] = []
        for g in np.flatnonzero(flag.any(axis=1)).tolist():
            lo, hi = int(ptr[at.runs[g]]), int(ptr[at.runs[g + 1]])
            hit = flag[g].take(index[lo:hi]).nonzero()[0] + lo
            if len(hit):
                rows_hit = np.searchsorted(ptr, hit, side="right") - 1
                found.extend(zip(rows_hit.tolist(), index[hit].tolist(), strict=True))
        return found
    entry_rows = row_ids(ptr)
    hit = flag[at.row_set[entry_rows], index].nonzero()[0]
    hit_rows = entry_rows[hit]
    ks = hit_rows if at.pos is None else at.pos[hit_rows]
    return list(zip(ks.tolist(), index[hit].tolist(), strict=True))


def _novel_ports(at: _Windows, block: VectorBlock, out: dict[int, list[NovelItem]]) -> None:
    starts = {s.ephemeral_start for s in at.sets}
    if len(starts) == 1:
        start = starts.pop()
        ports = [ep_port(ep, start) for ep in block.endpoints]
        for k, j in _by_table(at, "port", ports, block.ep_ptr, block.ep_index):
            out.setdefault(k, []).append(NovelItem("port", ports[j]))
        return
    for g, one in enumerate(at.sets):  # sets that remember different port ranges: one set at a time
        ports = [ep_port(ep, one.ephemeral_start) for ep in block.endpoints]
        for k, j in _by_table(at, "port", ports, block.ep_ptr, block.ep_index):
            if at.group[k] == g:
                out.setdefault(k, []).append(NovelItem("port", ports[j]))


def ep_port(ep: Endpoint, ephemeral_start: int) -> str:
    """The remembered form of an endpoint's port (``"tcp/5432"``), or ``""`` when it is not remembered
    (inbound, or ephemeral)."""
    return f"{ep.protocol}/{ep.port}" if ep.outbound and 0 < ep.port < ephemeral_start else ""

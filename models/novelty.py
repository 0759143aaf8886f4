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
from baseliner.models.vector import Endpoint, FeatureVector

KINDS = ("executable", "syscall", "port", "sensitive_path")


@dataclass(frozen=True, slots=True)
class NovelItem:
    kind: str  # one of KINDS
    value: str

    def text(self) -> str:
        return f"new {self.kind.replace('_', ' ')} {self.value}"


def _ports(v: FeatureVector, ephemeral_start: int) -> list[str]:
    return [p for p in (ep_port(ep, ephemeral_start) for ep in v.endpoints) if p]


def _items(v: FeatureVector, ephemeral_start: int) -> dict[str, Iterable[str]]:
    return {
        "executable": v.executables,
        "syscall": v.syscalls.keys(),
        "port": _ports(v, ephemeral_start),
        "sensitive_path": v.sensitive_paths,
    }


class NoveltySets:
    """Bounded first-seen sets for one image.

    >>> from baseliner.models.vector import FeatureVector, Identity
    >>> sets = NoveltySets(capacity=100)
    >>> v = FeatureVector(Identity("n", "c", "nginx"), 1.7e9, 5.0, {"read": 3}, executables=["/usr/sbin/nginx"])
    >>> sets.learn(v)
    >>> sets.novel(v)
    []
    >>> v.executables.append("/bin/sh")
    >>> [i.text() for i in sets.novel(v)]
    ['new executable /bin/sh']
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

    def novel(self, v: FeatureVector) -> list[NovelItem]:
        sets, saturated = self.sets, self.saturated
        out: list[NovelItem] = []
        if v.executables and not saturated["executable"]:
            known = sets["executable"]
            out.extend(NovelItem("executable", e) for e in v.executables if e not in known)
        if not saturated["syscall"]:
            known = sets["syscall"]
            calls = v.syscalls.keys()
            if not calls <= known:  # the usual case allocates nothing
                out.extend(NovelItem("syscall", name) for name in sorted(calls - known))
        if v.endpoints and not saturated["port"]:
            known = sets["port"]
            for port in _ports(v, self.ephemeral_start):
                if port not in known:
                    out.append(NovelItem("port", port))
        if v.sensitive_paths and not saturated["sensitive_path"]:
            known = sets["sensitive_path"]
            out.extend(NovelItem("sensitive_path", p) for p in v.sensitive_paths if p not in known)
        return out

    def novel_block(self, block: VectorBlock) -> dict[int, list[NovelItem]]:
        """:meth:`novel` for every window of a block: ``{row: items}`` for the rows that have any."""
        return novel_rows([self], block, None, np.zeros(len(block), dtype=np.int64))

    def learn(self, v: FeatureVector, startup: bool = False, replicas: int = 1) -> None:
        """Count support for ``v``'s unknown items; promote those with enough.

        ``replicas`` is how many containers of the image have been seen (support across containers is
        asked for only up to that many).
        """
        items = [NovelItem(kind, item) for kind, kind_items in _items(v, self.ephemeral_start).items()
                 for item in kind_items]
        self.learn_items(items, f"{v.identity.node}/{v.identity.container_id}", startup, replicas)

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
    """:meth:`NoveltySets.novel` of windows ``rows`` of ``block`` (``None``: all, in order), window
    ``rows[k]`` against ``sets[group[k]]``: ``{k: items}`` for the ``k`` that have any (items in the order
    ``novel`` gives).

    Many images' windows at once: each distinct syscall name and endpoint of the block is looked up once
    per set, and the windows' entries are matched with array operations; only executables and sensitive
    paths (rare) are looked at one by one.

    >>> from baseliner.models.vector import FeatureVector, Identity
    >>> a, b = NoveltySets(), NoveltySets()
    >>> a.add("syscall", ["read"]); b.add("syscall", ["read", "write"])
    >>> blk = VectorBlock.from_vectors([FeatureVector(Identity("n", "c", "x"), 0.0, 5.0, {"read": 1, "write": 1})] * 2)
    >>> {k: [i.text() for i in v] for k, v in novel_rows([a, b], blk, np.array([0, 1]), np.array([0, 1])).items()}
    {0: ['new syscall write']}
    """
    out: dict[int, list[NovelItem]] = {}
    if rows is None:
        pos = None
    elif not len(rows):
        return out
    else:
        pos = np.full(len(block), -1, dtype=np.int64)  # block row -> k
        pos[rows] = np.arange(len(rows), dtype=np.int64)
    group_list = group.tolist()
    # rows in order and each set's rows one run (the service's usual block): set g's windows are rows
    # [runs[g], runs[g + 1]), and its entries of a CSR layout one slice
    runs = None
    if pos is None and len(group) and bool((group[1:] >= group[:-1]).all()):
        runs = np.searchsorted(group, np.arange(len(sets) + 1))
    # each block row's set (len(sets) for a row not asked about)
    row_set = group if pos is None else np.append(group, len(sets))[pos]

    def k_of(ptr: np.ndarray) -> np.ndarray:
        """``k`` of each entry of a CSR layout (-1: a row not asked about)."""
        return row_ids(ptr) if pos is None else pos[row_ids(ptr)]

    def one_by_one(kind: str, ptr: np.ndarray, items: list[str]) -> None:
        for k, item in zip(k_of(ptr).tolist(), items, strict=True):
            if k < 0:
                continue
            s = sets[group_list[k]]
            if not s.saturated[kind] and item not in s.sets[kind]:
                out.setdefault(k, []).append(NovelItem(kind, item))

    def by_table(kind: str, keys: list[str], ptr: np.ndarray, index: np.ndarray) -> list[tuple[int, int]]:
        """(k, key index) of the entries whose key is new to their window's set, in entry order."""
        flag = np.zeros((len(sets) + 1, len(keys)), dtype=bool)  # (row len(sets): rows not asked about)
        table = tuple(keys)
        for g, s in enumerate(sets):
            if not s.saturated[kind]:
                cached = s._unknown.get(kind)
                if cached is not None and cached[1] == s._version and cached[0] == table:
                    unknown = cached[2]
                else:
                    known = s.sets[kind]
                    unknown = [j for j, key in enumerate(keys) if key and key not in known]
                    s._unknown[kind] = (table, s._version, unknown)
                flag[g, unknown] = True
        if not flag.any():
            return []
        if runs is not None:  # each set's entries on their own: one lookup per entry, no per-entry row
            found: list[tuple[int, int]] = []
            for g in np.flatnonzero(flag.any(axis=1)).tolist():
                lo, hi = int(ptr[runs[g]]), int(ptr[runs[g + 1]])
                hit = np.flatnonzero(flag[g].take(index[lo:hi])) + lo
                if len(hit):
                    rows_hit = np.searchsorted(ptr, hit, side="right") - 1
                    found.extend(zip(rows_hit.tolist(), index[hit].tolist(), strict=True))
            return found
        entry_rows = row_ids(ptr)
        hit = np.flatnonzero(flag[row_set[entry_rows], index])
        hit_rows = entry_rows[hit]
        ks = hit_rows if pos is None else pos[hit_rows]
        return list(zip(ks.tolist(), index[hit].tolist(), strict=True))

    if block.executables:
        one_by_one("executable", block.exe_ptr, block.executables)
    if len(block.sc_name):
        names = block.syscall_names
        for k, j in sorted(set(by_table("syscall", names, block.sc_ptr, block.sc_name)),
                           key=lambda kj: (kj[0], names[kj[1]])):
            out.setdefault(k, []).append(NovelItem("syscall", names[j]))
    if len(block.ep_index):
        starts = {s.ephemeral_start for s in sets}
        if len(starts) == 1:
            start = starts.pop()
            ports = [ep_port(ep, start) for ep in block.endpoints]
            for k, j in by_table("port", ports, block.ep_ptr, block.ep_index):
                out.setdefault(k, []).append(NovelItem("port", ports[j]))
        else:  # sets that remember different port ranges: one set at a time
            for g, one in enumerate(sets):
                ports = [ep_port(ep, one.ephemeral_start) for ep in block.endpoints]
                found = by_table("port", ports, block.ep_ptr, block.ep_index)
                for k, j in found:
                    if group_list[k] == g:
                        out.setdefault(k, []).append(NovelItem("port", ports[j]))
    if block.sensitive_paths:
        one_by_one("sensitive_path", block.path_ptr, block.sensitive_paths)
    return out


def ep_port(ep: Endpoint, ephemeral_start: int) -> str:
    """The remembered form of an endpoint's port (``"tcp/5432"``), or ``""`` when it is not remembered
    (inbound, or ephemeral)."""
    return f"{ep.protocol}/{ep.port}" if ep.outbound and 0 < ep.port < ephemeral_start else ""

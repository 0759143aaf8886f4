"""Windows of containers whose metadata is not known yet, held back in order until it is.

Generic over what a window's counts are (the eBPF source holds :class:`~baseliner.sensor.vectors.WindowCounts`
restricted to the pending cgroups).  Every window, :meth:`HoldBack.release` takes the resolver's answer for
the held cgroups: attributed ones leave (oldest window first, before the current window's vectors), dropped
ones are counted by reason, pending ones stay.  At most ``max_windows`` windows are held; beyond, the oldest
is dropped (``hold_full``).

>>> hb = HoldBack[str](max_windows=4)
>>> _ = hb.hold(0.0, 1.0, "w0", {7, 8})
>>> _ = hb.hold(1.0, 1.0, "w1", {7})
>>> ready, dropped = hb.release({7: "info7"}, {8: "exited_before_lookup"})
>>> [(w.start, w.counts, a) for w, a in ready], dropped, len(hb)
([(0.0, 'w0', {7: 'info7'}), (1.0, 'w1', {7: 'info7'})], {'exited_before_lookup': 1}, 0)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

C = TypeVar("C")
A = TypeVar("A")


@dataclass
class HeldWindow(Generic[C]):
    start: float
    seconds: float
    counts: C
    cgroups: set[int]


class HoldBack(Generic[C]):
    def __init__(self, max_windows: int = 1024) -> None:
        self.max_windows = max_windows
        self._windows: deque[HeldWindow[C]] = deque()

    def __len__(self) -> int:
        return len(self._windows)

    def cgroups(self) -> set[int]:
        """Every cgroup some held window waits for."""
        out: set[int] = set()
        for w in self._windows:
            out |= w.cgroups
        return out

    def hold(self, start: float, seconds: float, counts: C, cgroups: set[int]) -> dict[str, int]:
        """Hold a window's counts of ``cgroups``; returns what had to be dropped to make room."""
        dropped: dict[str, int] = {}
        if not cgroups:
            return dropped
        self._windows.append(HeldWindow(start, seconds, counts, set(cgroups)))
        while len(self._windows) > self.max_windows:
            old = self._windows.popleft()
            dropped["hold_full"] = dropped.get("hold_full", 0) + len(old.cgroups)
        return dropped

    def release(self, attribution: Mapping[int, A], dropped: Mapping[int, str]
                ) -> tuple[list[tuple[HeldWindow[C], dict[int, A]]], dict[str, int]]:
        """(held windows with their newly attributed cgroups, oldest first; cgroup-windows dropped by reason)."""
        ready: list[tuple[HeldWindow[C], dict[int, A]]] = []
        lost: dict[str, int] = {}
        keep: deque[HeldWindow[C]] = deque()
        for w in self._windows:
            now = {cg: attribution[cg] for cg in w.cgroups if cg in attribution}
            for cg in w.cgroups:
                if cg in dropped:
                    lost[dropped[cg]] = lost.get(dropped[cg], 0) + 1
            if now:
                ready.append((w, now))
            w.cgroups -= now.keys() | dropped.keys()
            if w.cgroups:
                keep.append(w)
        self._windows = keep
        return ready, lost

"""The eBPF vector source: every window, flip and drain the kernel maps, attribute, build vectors.

``BpfSource`` is what ``baseliner sensor --source bpf`` streams: iterate it (or ``async for`` over
:meth:`BpfSource.awindows`) to get one ``list[FeatureVector]`` per window, aligned on the sensor's clock.
Counts of a container whose runtime metadata is not known yet are held back (``HoldBack``) and come out,
with their own window times, before the window in which it is attributed; a container given up is dropped
(counted by reason), never sent under an ``unknown`` image.  Self-metrics: ``docs/sensor.md``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from baseliner.models.vector import FeatureVector
from baseliner.sensor.attribution import AttributionConfig, HoldBack, Resolver
from baseliner.sensor.probes import ProbeConfig, Probes
from baseliner.sensor.vectors import WindowCounts, build_vectors
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

log = logging.getLogger(__name__)


@dataclass
class BpfSourceConfig:
    window_seconds: float = 5.0
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)

    def __post_init__(self) -> None:
        if not 0.05 <= self.window_seconds <= 3600:
            raise ValueError(f"window_seconds must be within [0.05, 3600], got {self.window_seconds}")


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.enabled = registry is not None
        if registry is None:
            return
        ns = "baseliner_sensor"
        self.windows = Counter(f"{ns}_windows_sent_total", "Windows drained and handed to the transport",
                               registry=registry)
        self.vectors = Histogram(f"{ns}_vectors_per_window", "Vectors (containers) per window",
                                 buckets=(0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), registry=registry)
        self.entries = Gauge(f"{ns}_window_map_entries", "Entries drained from the kernel maps last window",
                             registry=registry)
        self.threads = Gauge(f"{ns}_threads_tracked", "Threads with n-gram history in the kernel",
                             registry=registry)
        self.sockets = Gauge(f"{ns}_sockets_tracked", "Sockets awaiting attribution in the kernel",
                             registry=registry)
        self.lost = Counter(f"{ns}_events_lost_total", "Kernel events not recorded because a map was full",
                            registry=registry)
        self.drain = Histogram(f"{ns}_drain_seconds", "Time to flip and drain the kernel maps",
                               buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                               registry=registry)
        self.attribution = Histogram(f"{ns}_attribution_seconds", "Time to resolve one window's cgroups to "
                                     "containers (runtime lookups included; not the vectors' building)",
                                     buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                                     registry=registry)
        ProcessCollector(namespace=ns, registry=registry)


def window_entries(w: WindowCounts) -> int:
    return (sum(len(d) for d in w.syscalls.values()) + sum(len(d) for d in w.ngrams.values())
            + len(w.counters) + sum(len(d) for d in w.exec_paths.values())
            + sum(len(d) for d in w.sensitive_paths.values()) + sum(len(e) for e in w.endpoints.values()))


class BpfSource:
    """Iterator of per-window vector lists from the kernel.  Needs root; loads the program on creation."""

    def __init__(self, config: BpfSourceConfig | None = None, registry: CollectorRegistry | None = None,
                 probes: Probes | None = None, resolver: Resolver | None = None) -> None:
        self.config = config or BpfSourceConfig()
        self.probes = probes or Probes(self.config.probes)
        self.resolver = resolver or Resolver(self.config.attribution, registry=registry)
        hold = self.resolver.config.hold_seconds / self.config.window_seconds
        self.held: HoldBack[WindowCounts] = HoldBack(max_windows=int(hold) + 2)
        self._m = _Metrics(registry)
        self.probes.flip()  # start the first window clean
        self.window_start = time.time()
        self._next = time.monotonic() + self.config.window_seconds
        self.windows = 0
        self.events_lost = 0
        self.resolve_seconds = 0.0  # the last window's attribution (runtime lookups included)

    def collect(self) -> list[FeatureVector]:
        """Close the current window now and return its vectors."""
        t0 = time.monotonic()
        end = time.time()
        counts = self.probes.flip()
        drained = time.monotonic() - t0
        start, self.window_start = self.window_start, end
        vectors = self.attribute(counts, start, end - start)
        lost = counts.lost_global + sum(c.get("lost", 0) for c in counts.counters.values())
        self.windows += 1
        self.events_lost += lost
        if lost:
            log.warning("window %d: %d kernel events lost (%d to full maps, %d that the kernel ran no program for: "
                        "one tracing program would have nested in another on a CPU); vectors marked incomplete",
                        self.windows, lost, lost - counts.missed, counts.missed)
        if self._m.enabled:
            self._m.windows.inc()
            self._m.vectors.observe(len(vectors))
            self._m.entries.set(window_entries(counts))
            self._m.lost.inc(lost)
            self._m.drain.observe(drained)
            self._m.attribution.observe(self.resolve_seconds)
            shared = self.probes.map_entries()
            self._m.threads.set(shared["history"])
            self._m.sockets.set(shared["sock_owner"] + shared["sock_pending_in"])
        return vectors

    def attribute(self, counts: WindowCounts, start: float, seconds: float) -> list[FeatureVector]:
        """The vectors of this window and of held windows whose containers are now attributed (those first);
        this window's pending cgroups are held."""
        cgroups = counts.cgroups()
        t0 = time.monotonic()
        res = self.resolver.resolve_all(cgroups | self.held.cgroups(), now=start)
        self.resolve_seconds = time.monotonic() - t0
        ready, dropped = self.held.release(res.attribution, res.dropped)
        vectors: list[FeatureVector] = []
        for w, attribution in ready:
            vectors += build_vectors(w.counts, attribution, window_start=w.start, window_seconds=w.seconds)
        vectors += build_vectors(counts, res.attribution, window_start=start, window_seconds=seconds)
        for cg in cgroups & res.dropped.keys():
            dropped[res.dropped[cg]] = dropped.get(res.dropped[cg], 0) + 1
        pending = cgroups & res.pending
        for reason, n in self.held.hold(start, seconds, counts.select(pending), pending).items():
            dropped[reason] = dropped.get(reason, 0) + n
        self.resolver.metrics.holding(len(self.held), sum(len(a) for _, a in ready), dropped)
        return vectors

    def __iter__(self) -> Iterator[list[FeatureVector]]:
        return self

    def __next__(self) -> list[FeatureVector]:
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next += self.config.window_seconds
        if self._next < time.monotonic():  # fell behind (suspended?): realign instead of bursting
            self._next = time.monotonic() + self.config.window_seconds
        return self.collect()

    async def awindows(self) -> AsyncIterator[list[FeatureVector]]:
        """The same windows for asyncio code (the drain runs in a worker thread)."""
        while True:
            delay = self._next - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next += self.config.window_seconds
            if self._next < time.monotonic():
                self._next = time.monotonic() + self.config.window_seconds
            yield await asyncio.to_thread(self.collect)

    def close(self) -> None:
        self.probes.close()
        self.resolver.close()

    def __enter__(self) -> BpfSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

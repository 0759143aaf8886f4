"""The sensor's attribution metrics (registry passed in; namespace ``baseliner_sensor``; labels bounded by
runtime names and the fixed reasons below)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: why windows of a container cgroup were not attributed (the ``reason`` label)
DROP_REASONS = ("cgroup_gone", "exited_before_lookup", "no_runtime", "runtime_down", "unknown_container",
                "hold_full")
#: how a cgroup was attributed (the ``outcome`` label)
OUTCOMES = ("runtime", "rule", "host", "ignored", "sandbox")


class AttributionMetrics:
    """Without a registry, the metrics go to a registry of their own that nobody reads."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        registry = registry or CollectorRegistry()
        ns = "baseliner_sensor"
        self.lookups = Counter(f"{ns}_runtime_lookups_total", "Container metadata lookups by runtime and result "
                               "(found, not_found, unavailable, bad_answer)", ["runtime", "result"], registry=registry)
        self.lookup_seconds = Histogram(f"{ns}_runtime_lookup_seconds", "Time of one container metadata lookup",
                                        ["runtime"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                              0.25, 0.5, 1, 2.5), registry=registry)
        self.up = Gauge(f"{ns}_runtime_up", "1 while the runtime answers, 0 while it fails (socket, path)",
                        ["runtime", "socket"], registry=registry)
        self.cgroups = Counter(f"{ns}_attributed_cgroups_total", "Cgroups attributed, by outcome (runtime metadata, "
                               "a rule, the host, ignored, a pod sandbox)", ["outcome"], registry=registry)
        self.unmatched = Counter(f"{ns}_cgroups_unmatched_total", "Cgroup paths that match no container layout and "
                                 "no rule (attributed to the host)", registry=registry)
        self.cache = Gauge(f"{ns}_attribution_cache_entries", "Cgroups and containers held in the attribution "
                           "caches", ["cache"], registry=registry)
        self.held = Gauge(f"{ns}_windows_held", "Cgroup windows held back until their container's metadata is known",
                          registry=registry)
        self.released = Counter(f"{ns}_windows_released_total", "Held cgroup windows attributed once their "
                                "container's metadata was known", registry=registry)
        self.dropped = Counter(f"{ns}_windows_unattributed_total", "Cgroup windows dropped because their container "
                               "could not be attributed, by reason", ["reason"], registry=registry)
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        for outcome in OUTCOMES:
            self.cgroups.labels(outcome)

    def lookup(self, runtime: str, result: str, seconds: float) -> None:
        self.lookups.labels(runtime, result).inc()
        self.lookup_seconds.labels(runtime).observe(seconds)

    def runtime_up(self, runtime: str, socket: str, up: bool) -> None:
        self.up.labels(runtime, socket).set(1 if up else 0)

    def socket_missing(self, kind: str, socket: str, missing: bool) -> None:
        """A socket named with --runtime that has no client: runtime_up{runtime=KIND} 0 while it lasts."""
        if missing:
            self.up.labels(kind, socket).set(0)
        else:
            try:
                self.up.remove(kind, socket)
            except KeyError:
                pass

    def attributed(self, outcome: str) -> None:
        self.cgroups.labels(outcome).inc()

    def no_layout(self) -> None:
        self.unmatched.inc()

    def caches(self, cgroups: int, containers: int) -> None:
        self.cache.labels("cgroups").set(cgroups)
        self.cache.labels("containers").set(containers)

    def holding(self, n: int, released: int, dropped: dict[str, int]) -> None:
        self.held.set(n)
        self.released.inc(released)
        for reason, k in dropped.items():
            self.dropped.labels(reason).inc(k)

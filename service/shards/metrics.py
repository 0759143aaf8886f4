"""Prometheus metrics of a shard (``docs/sharding.md``, ``docs/service.md``): bounded labels only.

Every series of a shard's own registry is that shard's; Prometheus adds the ``shard`` label to all of them from
the scrape target (the pod's name; ``deploy/prometheus``), so none of these carries it.  ``peer`` labels name
other shards, at most ``shards.max_label_shards`` of them (``__other__`` beyond).
"""

from __future__ import annotations

from typing import Any

from baseliner.service.sinks.metrics import CappedLabel
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

NS = "baseliner_shard"


class ShardMetrics:
    """The shard's metrics in ``registry`` (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry, max_peers: int = 64) -> None:
        self.peer = CappedLabel(max_peers)
        self.info = Info(NS, "This shard's name and the shard map it follows", registry=registry)
        self.epoch = Gauge(f"{NS}_map_epoch", "Epoch of the shard map this shard follows", registry=registry)
        self.shards = Gauge(f"{NS}_map_shards", "Shards in the map this shard follows", registry=registry)
        self.member = Gauge(f"{NS}_member", "1 when this shard is in the map it follows (0: leaving, draining)",
                            registry=registry)
        self.settled = Gauge(f"{NS}_settled", "1 when every image this shard owns is here (no handover pending)",
                             registry=registry)
        self.keys = Gauge(f"{NS}_routing_keys", "Routing keys (image repositories) whose baselines are here",
                          registry=registry)
        self.to_pull = Gauge(f"{NS}_handovers_pending", "Routing keys this shard owns and still fetches",
                             registry=registry)
        self.peer_up = Gauge(f"{NS}_peer_up", "1 when the shard answered this shard's last call (itself: 1)",
                             ["peer"], registry=registry)
        self.forwarded_vectors = Counter(f"{NS}_forwarded_vectors_total",
                                         "Windows forwarded to the shard that holds their image", ["peer"],
                                         registry=registry)
        self.forward_errors = Counter(f"{NS}_forward_failures_total", "Forward calls that failed (retried)",
                                      ["peer"], registry=registry)
        self.received_vectors = Counter(f"{NS}_received_forwarded_vectors_total",
                                        "Windows other shards forwarded here", registry=registry)
        self.handovers = Counter(f"{NS}_handovers_total", "Routing keys handed over, by direction and outcome",
                                 ["direction", "outcome"], registry=registry)
        self.handover_seconds = Histogram(f"{NS}_handover_seconds", "Time to pull, write down and commit one key",
                                          buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                                          registry=registry)
        self.forwarded_calls = Counter(f"{NS}_forwarded_calls_total",
                                       "Admin calls and Falco alerts passed to the shard that holds the image",
                                       ["kind"], registry=registry)
        for kind in ("admin", "falco"):
            self.forwarded_calls.labels(kind)
        for direction in ("in", "out"):
            for outcome in ("done", "failed", "refused"):
                self.handovers.labels(direction, outcome)

    def show(self, name: str, membership: Any, holdings: Any) -> None:
        """Set the gauges from the shard's state (called when it changes and before a scrape would miss it)."""
        self.info.info({"shard": name})
        self.up(name, True)  # (a shard reaches itself: the series exists on every shard, alone or not)
        self.epoch.set(membership.epoch)
        self.shards.set(len(membership.map))
        self.member.set(1 if membership.member else 0)
        self.settled.set(1 if membership.previous is None and not holdings.to_pull else 0)
        self.keys.set(len(holdings.held_keys()))
        self.to_pull.set(len(holdings.to_pull))

    def forwarded(self, peer: str, n: int) -> None:
        self.forwarded_vectors.labels(self.peer(peer)).inc(n)

    def forward_failures(self, peer: str) -> None:
        self.forward_errors.labels(self.peer(peer)).inc()

    def received_forwarded(self, n: int) -> None:
        self.received_vectors.inc(n)

    def up(self, peer: str, ok: bool) -> None:
        self.peer_up.labels(self.peer(peer)).set(1 if ok else 0)

"""Prometheus metrics of the service, under the one namespace ``baseliner``, on a registry passed in.

Labels are bounded (``docs/service.md``, "Metrics"): ``image``, ``namespace`` and ``node`` are capped (overflow
``"__other__"``), the rest are closed sets; never pod, container id or pid.  Scores are observed per batch:
:class:`BatchHistogram` adds a whole array to its buckets with one ``searchsorted``/``bincount``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from baseliner.models.lineage import FALLBACK_EVENT, FALLBACK_REASONS, VERSION_DIFF
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

NAMESPACE = "baseliner"
OVERFLOW = "__other__"
#: Score buckets: the combined score is calibrated so that its threshold usually sits between 1 and 10.
DEFAULT_SCORE_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0)
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)
STATES: tuple[str, ...] = ("learning", "detecting", "frozen")
# baseliner.models.baseline.LEARNING_REASONS (a closed label set; tests/test_service_metrics.py checks they agree)
LEARNING_REASONS: tuple[str, ...] = ("windows", "time", "calibrating", "unstable", "stable", "limit", "operator")


class BatchHistogram(Collector):
    """A labelled histogram that takes whole arrays of observations at once.

    >>> reg = CollectorRegistry()
    >>> h = BatchHistogram("baseliner_demo_score", "demo", ["image"], (1.0, 2.0), reg)
    >>> h.observe_groups([("nginx:1",)], [np.array([0.5, 1.5, 3.0, float("inf")])])
    >>> reg.get_sample_value("baseliner_demo_score_bucket", {"image": "nginx:1", "le": "2.0"})
    2.0
    >>> reg.get_sample_value("baseliner_demo_score_count", {"image": "nginx:1"})
    4.0
    """

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.bounds = np.array(sorted(float(b) for b in buckets), dtype=np.float64)
        self._series: dict[tuple[str, ...], tuple[np.ndarray, list[float]]] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def observe_groups(self, labels: Sequence[tuple[str, ...]], values: Sequence[np.ndarray]) -> None:
        """Observe ``values[g]`` into series ``labels[g]`` (a label set may repeat), in one bucket search."""
        sizes = [len(v) for v in values]
        if not sum(sizes):
            return
        v = np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in values])
        group = np.repeat(np.arange(len(sizes)), sizes)
        width = len(self.bounds) + 1
        finite = np.isfinite(v)
        if finite.all():
            totals = np.bincount(group, weights=v, minlength=len(sizes))
        else:  # NaN is not observed; infinities count in +Inf but not in the sum
            keep = ~np.isnan(v)
            totals = np.bincount(group[finite], weights=v[finite], minlength=len(sizes))
            v, group = v[keep], group[keep]
        counts = np.bincount(group * width + np.searchsorted(self.bounds, v, side="left"),
                             minlength=len(sizes) * width).reshape(len(sizes), width)
        with self._lock:
            for g, key in enumerate(labels):
                if not sizes[g]:
                    continue
                series = self._series.get(key)
                if series is None:
                    series = self._series[key] = (np.zeros(width, dtype=np.int64), [0.0])
                np.add(series[0], counts[g], out=series[0])
                series[1][0] += float(totals[g])

    def remove(self, labels: tuple[str, ...]) -> None:
        with self._lock:
            self._series.pop(labels, None)

    def collect(self) -> Iterable[Metric]:
        fam = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            items = [(k, c.cumsum(), s[0]) for k, (c, s) in self._series.items()]
        bounds = [repr(float(b)) for b in self.bounds] + ["+Inf"]
        for labels, cum, total in items:
            fam.add_metric(list(labels), [(b, float(c)) for b, c in zip(bounds, cum, strict=True)], total)
        yield fam

    def describe(self) -> Iterable[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)


class _CallbackGauges(Collector):
    """Gauges computed at scrape time from the service's own state."""

    def __init__(self, registry: CollectorRegistry, image_label: Callable[[str], str] | None = None) -> None:
        self.baseline_states: Callable[[], Mapping[str, int]] = lambda: {}
        self.model_memory: Callable[[], float] = lambda: 0.0
        self.baselines: Callable[[], Iterable[tuple[str, Any]]] = lambda: ()
        self.image_label = image_label or (lambda s: s)
        registry.register(self)

    def _per_image(self) -> Iterable[Metric]:
        """Per-image lifecycle gauges (images over the label cap are left out, not lumped together)."""
        state = GaugeMetricFamily(f"{NAMESPACE}_baseline_state",
                                  "1 for the lifecycle state each image's baseline is in, 0 for the others",
                                  labels=["image", "state"])
        thr = GaugeMetricFamily(f"{NAMESPACE}_baseline_threshold",
                                "Calibrated score threshold of each image (absent until calibrated)", labels=["image"])
        learned = GaugeMetricFamily(f"{NAMESPACE}_baseline_windows_learned",
                                    "Windows absorbed into each image's baseline", labels=["image"])
        span = GaugeMetricFamily(f"{NAMESPACE}_baseline_observed_seconds",
                                 "Event time between each image's first and last window seen", labels=["image"])
        lineage = GaugeMetricFamily(f"{NAMESPACE}_baseline_lineage",
                                    "1 per image with a lineage: the image key it inherited from (\"\" for none) "
                                    "and its lineage status (root, observing, adapting, adapted, fallback)",
                                    labels=["image", "parent", "status"])
        reason = GaugeMetricFamily(f"{NAMESPACE}_baseline_learning_reason",
                                   "1 for why each image's baseline is learning or why its learning ended "
                                   "(windows, time, calibrating, unstable, stable, limit, operator), 0 for the others",
                                   labels=["image", "reason"])
        try:
            items = list(self.baselines())
        except Exception:
            log.exception("collecting per-image baseline gauges failed")
            items = []
        for key, b in items:
            image = self.image_label(key)
            if image == OVERFLOW:
                continue
            current = str(getattr(b.state, "value", b.state))
            for s in STATES:
                state.add_metric([image, s], 1.0 if s == current else 0.0)
            t = float(b.threshold)
            if math.isfinite(t) and current != "learning":
                thr.add_metric([image], t)
            learned.add_metric([image], float(b.windows_learned))
            span.add_metric([image], float(getattr(b, "learned_seconds", 0.0)))
            lin = getattr(b, "lineage", None)
            if lin is not None:
                lineage.add_metric([image, self.image_label(lin.parent) if lin.parent else "", lin.status], 1.0)
            why = str(getattr(b, "learning_reason", ""))
            for r in LEARNING_REASONS:
                reason.add_metric([image, r], 1.0 if r == why else 0.0)
        yield from (state, thr, learned, span, lineage, reason)

    def collect(self) -> Iterable[Metric]:
        g = GaugeMetricFamily(f"{NAMESPACE}_baselines", "Baselines in memory by lifecycle state", labels=["state"])
        try:
            states = dict(self.baseline_states())
        except Exception:  # a scrape must never take the service down
            log.exception("collecting baseline states failed")
            states = {}
        for s in STATES:
            g.add_metric([s], float(states.get(s, 0)))
        yield g
        try:
            mem = float(self.model_memory())
        except Exception:
            log.exception("collecting model memory failed")
            mem = 0.0
        yield GaugeMetricFamily(
            f"{NAMESPACE}_model_memory_bytes",
            "Estimated memory held by all baselines (their state arrays and novelty sets)",
            value=mem,
        )
        yield from self._per_image()

    def describe(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(f"{NAMESPACE}_baselines", "", labels=["state"])
        yield GaugeMetricFamily(f"{NAMESPACE}_model_memory_bytes", "")
        for name in ("baseline_state", "baseline_threshold", "baseline_windows_learned", "baseline_observed_seconds",
                     "baseline_lineage", "baseline_learning_reason"):
            yield GaugeMetricFamily(f"{NAMESPACE}_{name}", "")


class CappedLabel:
    """Maps an unbounded value set onto at most ``cap`` label values plus :data:`OVERFLOW`."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._known: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._known:
            return value
        if len(self._known) < self.cap:
            self._known.add(value)
            return value
        return OVERFLOW

    def forget(self, value: str) -> bool:
        if value in self._known:
            self._known.discard(value)
            return True
        return False


class ServiceMetrics:
    """Every metric the service exports. Pass the registry in; nothing global."""

    def __init__(
        self,
        registry: CollectorRegistry,
        max_images: int = 500,
        max_namespaces: int = 200,
        max_nodes: int = 1000,
        score_buckets: Sequence[float] = DEFAULT_SCORE_BUCKETS,
        reject_reasons: Sequence[str] = (),
    ) -> None:
        self.registry = registry
        self.image_label = CappedLabel(max_images)
        self.namespace_label = CappedLabel(max_namespaces)
        self.node_label = CappedLabel(max_nodes)
        self._ingest_metrics(registry, reject_reasons)
        self._detection_metrics(registry, score_buckets)
        self._state_metrics(registry)
        self._gauges = _CallbackGauges(registry, self.image_label)

    def _ingest_metrics(self, registry: CollectorRegistry, reject_reasons: Sequence[str]) -> None:
        ns = NAMESPACE
        self.vectors_received = Counter(
            "vectors_received", "Vectors received in batches (before validation)", ["node"],
            namespace=ns, registry=registry,
        )
        self.vectors_applied = Counter(
            "vectors_applied", "Vectors scored (and learned where the baseline's mode allows)",
            namespace=ns, registry=registry,
        )
        self.vectors_rejected = Counter(
            "vectors_rejected", "Vectors rejected, by reason (RejectReason names, BASELINE_LIMIT)", ["reason"],
            namespace=ns, registry=registry,
        )
        self.batches_received = Counter(
            "batches_received", "Batches received", namespace=ns, registry=registry
        )
        self.batches_duplicate = Counter(
            "batches_duplicate", "Batches recognised as resends of applied ones (not applied again)",
            namespace=ns, registry=registry,
        )
        self.batches_refused = Counter(
            "batches_refused", "Batches refused as a whole (unsupported version, too large)", ["reason"],
            namespace=ns, registry=registry,
        )
        for reason in reject_reasons:  # zero series from the start, so that increase() sees the first one
            self.vectors_rejected.labels(reason)
            self.batches_refused.labels(reason)
        self.ingest_latency = Histogram(
            "ingest_latency_seconds", "Time from a batch's arrival to its acknowledgement",
            namespace=ns, registry=registry, buckets=LATENCY_BUCKETS,
        )

    def _detection_metrics(self, registry: CollectorRegistry, score_buckets: Sequence[float]) -> None:
        ns = NAMESPACE
        self.anomalies = Counter(
            "anomalies", "Anomalous windows by image, namespace, kind and severity",
            ["image", "namespace", "kind", "severity"], namespace=ns, registry=registry,
        )
        self.events_emitted = Counter(
            "events_emitted", "Anomaly events written (first occurrences and their count updates)",
            namespace=ns, registry=registry,
        )
        self.scores = BatchHistogram(
            f"{ns}_anomaly_score", "Combined anomaly score of every scored window, by image", ["image"],
            score_buckets, registry,
        )
        self.scoring_latency = Histogram(
            "scoring_latency_seconds", "Time to score and learn the windows of one batch (every image at once)",
            namespace=ns, registry=registry, buckets=LATENCY_BUCKETS,
        )
        self.lineage_events = Counter(
            "lineage_events", "Version events: version_diff (a new image version's diff against its parent) and "
            "lineage_fallback (a version too different from its parent, learnt from scratch), with the reason",
            ["kind", "reason"], namespace=ns, registry=registry,
        )
        # every series an alert rule selects exists from the start, at 0 (an absent series is no "increase")
        self.lineage_events.labels(VERSION_DIFF, "none")
        for reason in FALLBACK_REASONS:
            self.lineage_events.labels(FALLBACK_EVENT, reason)
        self.baseline_limit = Gauge(
            "baselines_limit", "Most baselines held in memory; vectors of further images are rejected",
            namespace=ns, registry=registry,
        )

    def _state_metrics(self, registry: CollectorRegistry) -> None:
        ns = NAMESPACE
        self.state_saves = Counter(
            "state_saves", "State checkpoints written", namespace=ns, registry=registry
        )
        self.state_save_failures = Counter(
            "state_save_failures", "State checkpoints that failed", namespace=ns, registry=registry
        )
        self.state_save_seconds = Gauge(
            "state_last_save_timestamp_seconds", "Wall-clock time of the last successful checkpoint",
            namespace=ns, registry=registry,
        )

    # -- wiring -------------------------------------------------------------------------------------
    def bind(
        self,
        baseline_states: Callable[[], Mapping[str, int]],
        model_memory: Callable[[], float],
        baselines: Callable[[], Iterable[tuple[str, Any]]] | None = None,
    ) -> None:
        """Scrape-time sources; ``baselines`` yields ``(image key, ImageBaseline)`` for the per-image gauges."""
        self._gauges.baseline_states = baseline_states
        self._gauges.model_memory = model_memory
        if baselines is not None:
            self._gauges.baselines = baselines

    # -- observations -------------------------------------------------------------------------------
    def received(self, node: str, n: int) -> None:
        self.batches_received.inc()
        if n:
            self.vectors_received.labels(self.node_label(node)).inc(n)

    def rejected(self, reason: str, n: int = 1) -> None:
        self.vectors_rejected.labels(reason).inc(n)

    def anomaly(self, image: str, namespace: str, kinds: Sequence[str], severity: str) -> None:
        img = self.image_label(image)
        nsl = self.namespace_label(namespace)
        for kind in kinds or ("unknown",):
            self.anomalies.labels(img, nsl, kind, severity or "none").inc()

    def lineage_event(self, kind: str, reason: str) -> None:
        """A version event (``reason``: the fallback's code, ``""`` for a diff)."""
        self.lineage_events.labels(kind, reason or "none").inc()

    def observe_batch_scores(self, images: Sequence[str], scores: Sequence[np.ndarray]) -> None:
        """Every image's window scores of one batch."""
        self.scores.observe_groups([(self.image_label(image),) for image in images], scores)

    def forget_image(self, image: str) -> None:
        """Remove an evicted or reset image's series (its label slot becomes free)."""
        if not self.image_label.forget(image):
            return
        self.scores.remove((image,))
        for labels in list(_label_sets(self.anomalies)):
            if labels and labels[0] == image:
                try:
                    self.anomalies.remove(*labels)
                except KeyError:
                    pass


def _label_sets(counter: Counter) -> list[tuple[str, ...]]:
    # prometheus_client keeps children in a private dict; reading its keys is the supported way to enumerate.
    with counter._lock:  # type: ignore[attr-defined]
        return list(counter._metrics)  # type: ignore[attr-defined,arg-type]

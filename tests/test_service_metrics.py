"""Metrics scraped from the real HTTP endpoint: names, units, labels, bounded cardinality, series removal."""

from __future__ import annotations

import asyncio
import os
import sys

import numpy as np
import pytest
from baseliner.protos.v1 import admin_pb2
from baseliner.service.sinks.metrics import OVERFLOW, ServiceMetrics
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, os.path.dirname(__file__))
from service_fixtures import (  # noqa: E402
    admin,
    batch_request,
    config,
    exchange,
    hello,
    learn_batches,
    running,
    sample,
    scrape,
    vector,
)

FORBIDDEN_LABELS = {"pod", "container", "container_id", "pid"}


def test_scrape_has_every_metric_with_bounded_labels() -> None:
    async def main() -> None:
        async with running(config(None, ("metrics.max_images", 2))) as (srv, _):
            await exchange(srv.port, [hello("s1"), *learn_batches(6)])
            await exchange(srv.port, [hello("s1"), batch_request([vector(60, 0, attack="shell")], 7)])
            # three more images: only one more gets its own label, the rest share "__other__"
            extra = [vector(0, 10 + k, repo=f"img{k}") for k in range(3)]
            await exchange(srv.port, [hello("s1"), batch_request(extra, 8)])
            text = scrape(srv.metrics_port)
            families = {f.name: f for f in text_string_to_metric_families(text)}
            for name in (
                "baseliner_vectors_received", "baseliner_vectors_rejected", "baseliner_anomalies",
                "baseliner_anomaly_score", "baseliner_baselines", "baseliner_ingest_latency_seconds",
                "baseliner_scoring_latency_seconds", "baseliner_model_memory_bytes", "baseliner_events_emitted",
            ):
                assert name in families, name
            for fam in families.values():
                assert fam.name.startswith("baseliner_")
                for s in fam.samples:
                    assert not FORBIDDEN_LABELS & set(s.labels), (fam.name, s.labels)
            assert sample(text, "baseliner_anomalies_total", image="nginx:1.27", namespace="default",
                          kind="novel_executable") == 1
            images = {s.labels["image"] for s in families["baseliner_anomaly_score"].samples}
            assert images == {"nginx:1.27", "img0:1.27", OVERFLOW}
            assert sample(text, "baseliner_anomaly_score_count", image="nginx:1.27") == 121
            assert sample(text, "baseliner_anomaly_score_count", image=OVERFLOW) == 2
            assert sample(text, "baseliner_baselines", state="detecting") == 1
            assert sample(text, "baseliner_baselines", state="learning") == 3
            assert sample(text, "baseliner_ingest_latency_seconds_count") == 8
            # memory is known after a checkpoint
            await srv.checkpoint(everything=True)
            assert (sample(scrape(srv.metrics_port), "baseliner_model_memory_bytes") or 0) > 1000
            # a reset removes the image's series and frees its label slot
            ch, stub = admin(srv.port)
            async with ch:
                await stub.ResetBaseline(admin_pb2.ResetBaselineRequest(key="nginx:1.27"))
            text = scrape(srv.metrics_port)
            assert sample(text, "baseliner_anomaly_score_count", image="nginx:1.27") is None
            assert sample(text, "baseliner_anomalies_total", image="nginx:1.27") is None

    asyncio.run(main())


def test_batch_histogram_matches_prometheus_semantics() -> None:
    reg = CollectorRegistry()
    m = ServiceMetrics(reg, max_images=1)
    m.observe_batch_scores(["a"], [np.array([0.1, 1.0, 1.0000001, 7.0, np.inf, np.nan])])
    m.observe_batch_scores(["b"], [np.array([2.0])])
    assert reg.get_sample_value("baseliner_anomaly_score_bucket", {"image": "a", "le": "0.1"}) == 1
    assert reg.get_sample_value("baseliner_anomaly_score_bucket", {"image": "a", "le": "1.0"}) == 2
    assert reg.get_sample_value("baseliner_anomaly_score_bucket", {"image": "a", "le": "10.0"}) == 4
    assert reg.get_sample_value("baseliner_anomaly_score_bucket", {"image": "a", "le": "+Inf"}) == 5
    assert reg.get_sample_value("baseliner_anomaly_score_count", {"image": "a"}) == 5
    assert abs((reg.get_sample_value("baseliner_anomaly_score_sum", {"image": "a"}) or 0) - 9.1000001) < 1e-9
    assert reg.get_sample_value("baseliner_anomaly_score_count", {"image": OVERFLOW}) == 1


def test_batch_scores_of_several_images_equal_one_image_at_a_time() -> None:
    one, many = ServiceMetrics(CollectorRegistry()), ServiceMetrics(CollectorRegistry())
    rng = np.random.default_rng(4)
    images = ["a:1", "b:1", "a:1", "c:1"]  # an image may come twice (its overflow label, say)
    scores = [rng.exponential(3.0, size=n) for n in (5, 0, 7, 3)]
    scores[2][1] = np.inf
    scores[3][0] = np.nan
    for image, values in zip(images, scores, strict=True):
        one.observe_batch_scores([image], [values])
    many.observe_batch_scores(images, scores)
    a = {(s.name, tuple(sorted(s.labels.items()))): s.value
         for metric in one.registry.collect() for s in metric.samples if "anomaly_score" in s.name}
    b = {(s.name, tuple(sorted(s.labels.items()))): s.value
         for metric in many.registry.collect() for s in metric.samples if "anomaly_score" in s.name}
    assert a and a.keys() == b.keys()
    for k in a:
        assert b[k] == pytest.approx(a[k]), k

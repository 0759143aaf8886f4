"""Per-image baseline gauges the dashboards and alert rules are built on (state, threshold, learning progress)."""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from service_fixtures import batch_request, config, exchange, hello, learn_batches, running, sample, scrape  # noqa: E402


def test_per_image_baseline_gauges_follow_the_lifecycle_and_the_image_cap() -> None:
    async def main() -> None:
        async with running(config(None, ("metrics.max_images", 1))) as (srv, _):
            await exchange(srv.port, [hello("s1"), *learn_batches(1)])
            text = await asyncio.to_thread(scrape, srv.metrics_port)
            assert sample(text, "baseliner_baseline_state", image="nginx:1.27", state="learning") == 1
            assert sample(text, "baseliner_baseline_state", image="nginx:1.27", state="detecting") == 0
            assert sample(text, "baseliner_baseline_threshold", image="nginx:1.27") is None  # not calibrated yet
            assert sample(text, "baseliner_baseline_windows_learned", image="nginx:1.27") == 20
            assert sample(text, "baseliner_baseline_observed_seconds", image="nginx:1.27") == 100
            await exchange(srv.port, [hello("s1"), *learn_batches(5, start_seq=2, start_window=10)])
            # a second image: over the cap of one image label, so it is left out rather than mislabelled
            from service_fixtures import vector

            await exchange(srv.port, [hello("s1"), batch_request([vector(0, 5, repo="redis", tag="7")], 7)])
            text = await asyncio.to_thread(scrape, srv.metrics_port)
            assert sample(text, "baseliner_baseline_state", image="nginx:1.27", state="detecting") == 1
            thr = sample(text, "baseliner_baseline_threshold", image="nginx:1.27")
            assert thr is not None and thr > 0
            assert sample(text, "baseliner_baseline_windows_learned", image="nginx:1.27") == 120
            assert sample(text, "baseliner_baseline_state", image="redis:7", state="learning") is None
            assert sample(text, "baseliner_baseline_state", image="__other__", state="learning") is None
            assert sample(text, "baseliner_baselines", state="learning") == 1  # still counted in the totals
            srv.pipeline.reset("nginx:1.27")
            text = await asyncio.to_thread(scrape, srv.metrics_port)
            assert sample(text, "baseliner_baseline_state", image="nginx:1.27", state="learning") == 1
            assert sample(text, "baseliner_baseline_threshold", image="nginx:1.27") is None

    asyncio.run(main())

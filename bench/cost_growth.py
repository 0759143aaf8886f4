"""How the service's CPU per vector grows with the shape of the load (one process, no gRPC).

    .venv/bin/python bench/cost_growth.py [--vectors 10000]

One :class:`baseliner.service.pipeline.Pipeline` per row (default model), fed pre-built blocks
(``VectorBlock``) of the bench workload of ``bench/service_throughput.py``: a learning phase until every image
has learnt ``min_learn_seconds`` (60 instead of 600, to keep it short), then every image set to detect (as
``Admin.SetMode`` does: by default learning ends on its own only after ~17 hours of event time), then
``--vectors`` windows measured (CPU time of this thread per vector, ``Pipeline.apply_block``: validation,
routing, scoring, learning, events).  Rows vary one thing at a time from 10 images x 50
containers, batches of 500, 200 n-gram entries a window:

* images per batch (1, 10, 100, 1,000; 500 windows a batch, 1,000 for 1,000 images),
* containers per image (5, 50, 500; 10 images),
* n-gram entries per window (0, 200, 800),

and reports the CPU per vector of each row and its ratio to the row before it.  Memory by resident baselines
(1,000 to 100,000) is ``bench/baseline_memory.py``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from baseliner.models.baseline import BaselineConfig  # noqa: E402
from baseliner.models.block import VectorBlock  # noqa: E402
from baseliner.service.config import PipelineConfig  # noqa: E402
from baseliner.service.pipeline import Pipeline  # noqa: E402
from service_throughput import WINDOW, Workload  # noqa: E402

ROWS: dict[str, list[tuple[int, int, int, int]]] = {  # (images, containers per image, n-gram entries, batch)
    "images per batch": [(1, 500, 200, 500), (10, 50, 200, 500), (100, 5, 200, 500), (1000, 1, 200, 1000)],
    "containers per image": [(10, 5, 200, 500), (10, 50, 200, 500), (10, 500, 200, 500)],
    "n-gram entries per window": [(10, 50, 0, 500), (10, 50, 200, 500), (10, 50, 800, 500)],
}


def row(images: int, containers: int, ngrams: int, batch: int, vectors: int) -> dict[str, Any]:
    cfg = BaselineConfig(min_learn_seconds=60.0)  # (a short learning phase: the rows measure detection)
    wl = Workload(images, containers, ngrams)
    rounds = max(int(cfg.min_learn_windows / containers) + 2, int(cfg.min_learn_seconds / WINDOW) + 2)

    def blocks(n: int) -> list[VectorBlock]:
        return [VectorBlock.from_vectors(b, list(range(len(b)))) for b in wl.batches(n, batch)]

    learn, measure = blocks(rounds * images * containers), blocks(vectors)
    pipe = Pipeline(PipelineConfig(max_baselines=100_000, max_containers=1_000_000), cfg)
    seq = 0
    for b in learn:
        seq += 1
        pipe.apply_block("bench", seq, b)
    for key in list(pipe.baselines):  # (by default learning ends on its own only after ~17 h of event time)
        pipe.set_mode(key, "detect")
    states = {b.state.value for b in pipe.baselines.values()}
    t0 = time.thread_time()
    for b in measure:
        seq += 1
        pipe.apply_block("bench", seq, b)
    cpu = time.thread_time() - t0
    n = sum(len(b) for b in measure)
    return {"images": images, "containers": containers, "ngrams": ngrams, "batch": batch,
            "cpu_us_per_vector": cpu / n * 1e6, "states": sorted(states)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", type=int, default=10_000, help="windows measured per row")
    ap.add_argument("--json", help="write results here as JSON")
    args = ap.parse_args()
    os.sched_setaffinity(0, {1})
    out: dict[str, list[dict[str, Any]]] = {}
    for what, shapes in ROWS.items():
        out[what] = []
        prev = None
        for images, containers, ngrams, batch in shapes:
            r = row(images, containers, ngrams, batch, args.vectors)
            step = "" if prev is None else f" ({r['cpu_us_per_vector'] / prev:.2f}x the row before)"
            print(f"{what}: {images} images x {containers} containers, {ngrams} n-gram entries, batches of {batch}: "
                  f"{r['cpu_us_per_vector']:.1f} CPU us/vector{step}; "
                  f"{'/'.join(r['states'])}", flush=True)
            prev = r["cpu_us_per_vector"]
            out[what].append(r)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

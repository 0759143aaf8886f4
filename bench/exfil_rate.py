"""How large must a rate-only anomaly be to be flagged?  The demo's data theft at several send rates.

The demo's scenario (seed 7, 30 s windows, 28 h, attacks from hour 24) and the demo's learning settings
(20 h, ended by time) run in-process through ``Pipeline.apply_block`` in blocks of random size (8 to
``--max-block`` vectors, seeded: block composition is what varies between runs over gRPC).  With
``--defaults``: every setting of the service left at its default (learning ends from the data) and the
synthetic cluster's default 10 s windows over 30 h.  The data
theft (``shop/db-0``: pages read with ``pread64`` and sent, with nothing novel) sends ``--rates`` bytes per
second instead of the scenario's ``EXFIL_BYTES_PER_SECOND``.  Reported per tier combination and rate, over
the seeds: the largest score of the theft's windows and the decision threshold (decades of improbability),
and in how many seeds it crossed.  The database's normal send rate is tens of kB/s with a spread as large as
its mean, so the theft's rise is a few hundred fold.

    .venv/bin/python bench/exfil_rate.py                                    # 12, 30 and 60 MB/s; fisher, either
    .venv/bin/python bench/exfil_rate.py --rates 12e6 --combinations fisher --seeds 1 2 3 4 5 6
    .venv/bin/python bench/exfil_rate.py --defaults --combinations fisher
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from baseliner.models.baseline import BaselineConfig  # noqa: E402
from baseliner.models.block import VectorBlock  # noqa: E402
from baseliner.sensor import synthetic  # noqa: E402
from baseliner.sensor.synthetic import HOUR, ScenarioConfig, SyntheticSource  # noqa: E402
from baseliner.service.config import PipelineConfig  # noqa: E402
from baseliner.service.pipeline import Pipeline  # noqa: E402

DB = "postgres:16.6"


def theft_scores(rate: float, combination: str, seed: int, max_block: int, defaults: bool) -> tuple[float, float]:
    """The largest score of the theft's windows, and the threshold there."""
    synthetic.EXFIL_BYTES_PER_SECOND = rate
    if defaults:
        scenario = ScenarioConfig(seed=7, hours=30, window_seconds=10, attack_after_hours=24)
        config = BaselineConfig(tier_combination=combination)
    else:
        scenario = ScenarioConfig(seed=7, hours=28, window_seconds=30, attack_after_hours=24, rollout_at_hours=25)
        config = BaselineConfig(min_learn_seconds=20 * HOUR, min_learn_windows=1000, stable_confidence=0.0,
                                tier_combination=combination)
    source = SyntheticSource(scenario)
    theft = next(a for a in source.attacks if a.kind == "data_exfiltration")
    pipeline = Pipeline(PipelineConfig(), config)
    best = (-np.inf, np.nan)

    def observe(key: str, block: VectorBlock, rows: np.ndarray, verdicts: Any) -> None:
        nonlocal best
        if key != DB:
            return
        start = block.window_start[rows]
        inside = (start >= theft.start) & (start < theft.end)
        if inside.any():
            i = int(np.argmax(np.where(inside, verdicts.score, -np.inf)))
            if verdicts.score[i] > best[0]:
                best = (float(verdicts.score[i]), float(verdicts.threshold[i]))

    pipeline.score_observers.append(observe)
    rng = np.random.default_rng(seed)
    buf: list[Any] = []
    size, seq = int(rng.integers(8, max_block)), 0
    for _, vectors in source.windows():
        buf.extend(vectors)
        if len(buf) >= size:
            seq += 1
            pipeline.apply_block("bench", seq, VectorBlock.from_vectors(buf))
            buf, size = [], int(rng.integers(8, max_block))
    if buf:
        pipeline.apply_block("bench", seq + 1, VectorBlock.from_vectors(buf))
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[12e6, 30e6, 60e6], help="bytes per second")
    ap.add_argument("--combinations", nargs="+", default=["fisher", "either"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--max-block", type=int, default=720, help="largest block, in vectors")
    ap.add_argument("--defaults", action="store_true", help="the service's defaults and 10 s windows over 30 h")
    args = ap.parse_args(argv)
    rows = []
    for rate in args.rates:
        for combination in args.combinations:
            runs = [theft_scores(rate, combination, s, args.max_block, args.defaults) for s in args.seeds]
            scores = [s for s, _ in runs]
            rows.append({"rate_mb_s": rate / 1e6, "learning": "defaults" if args.defaults else "demo",
                         "combination": combination,
                         "score_min": round(min(scores), 2), "score_max": round(max(scores), 2),
                         "threshold": round(runs[0][1], 2),
                         "flagged": f"{sum(s >= t for s, t in runs)}/{len(runs)}"})
            print(json.dumps(rows[-1]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-vector cost of the n-gram sequence detector (learn + score), on real ADFA-LD windows.

Windows of 100 calls from ``Training_Data_Master`` (each ~300 non-zero buckets of orders 2-4).  Measures
``learn_one``/``score_one`` on dicts, and ``learn_many``/``score_many`` on batches given as a sparse CSR
matrix and as a dense ``(n, NUM_BUCKETS)`` array (``baseliner.models.ngrams.dense`` rows), plus the cost of
building those batches from ``FeatureVector.ngrams`` dicts.

    .venv/bin/python bench/evaluate_ngram_cost.py [--adfa PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baseliner.models.detectors.ngram_likelihood import NgramDetector, dicts_to_matrix  # noqa: E402
from baseliner.models.evaluate.adfa import load_adfa  # noqa: E402
from baseliner.models.evaluate.windows import count_windows  # noqa: E402
from baseliner.models.ngrams import dense  # noqa: E402


def per_vector_us(fn, n: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 1e6 * best / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adfa", default=None)
    ap.add_argument("--tail", type=float, default=1.0)
    args = ap.parse_args()
    traces = load_adfa(args.adfa, splits=("train",))
    rows = [ng for t in traces for _, ng in count_windows(t.calls, 100)]
    nnz = np.mean([len(r) for r in rows])
    print(f"{len(rows)} windows of 100 calls, {nnz:.0f} non-zero buckets on average; tail={args.tail}")
    det = NgramDetector(tail=args.tail)
    det.learn_many(dicts_to_matrix(rows))
    print(f"state: {sum(a.nbytes for a in det.to_arrays().values()) / 1024:.1f} KiB")
    results = []
    sample = rows[:500]
    results.append(("learn_one (dict)", per_vector_us(lambda: [det.learn_one(r) for r in sample], len(sample))))
    results.append(("score_one (dict)", per_vector_us(lambda: [det.score_one(r) for r in sample], len(sample))))
    for batch in (100, 1000):
        chunk = rows[:batch]
        csr = dicts_to_matrix(chunk)
        arr = np.stack([dense(r) for r in chunk])
        results.append((f"dicts -> CSR, batch {batch}", per_vector_us(lambda c=chunk: dicts_to_matrix(c), batch)))
        results.append((f"learn_many CSR, batch {batch}", per_vector_us(lambda m=csr: det.learn_many(m), batch)))
        results.append((f"score_many CSR, batch {batch}", per_vector_us(lambda m=csr: det.score_many(m), batch)))
        results.append((f"learn_many dense, batch {batch}", per_vector_us(lambda m=arr: det.learn_many(m), batch)))
        results.append((f"score_many dense, batch {batch}", per_vector_us(lambda m=arr: det.score_many(m), batch)))
    print("| operation | µs per vector |")
    print("| --- | ---: |")
    for name, us in results:
        print(f"| {name} | {us:.1f} |")


if __name__ == "__main__":
    main()

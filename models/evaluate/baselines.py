"""Classic host-IDS baselines, each small and honest, scoring whole traces.

* :class:`Stide` (Forrest et al. 1996; Hofmeyr et al. 1998): the set of length-``n`` call sequences
  seen in training; a trace scores the fraction of its sequences never seen.
* :class:`BagNearestNeighbour`: a trace's syscall frequency distribution; score = Hellinger distance
  to the nearest training trace.
* :class:`IsolationForestBaseline`: scikit-learn's ``IsolationForest`` (default settings) on syscall
  frequencies.
* :class:`HalfSpaceTreesBaseline`: River's ``MinMaxScaler | HalfSpaceTrees`` with default settings on
  syscall frequencies, learnt in one pass.

All learn on normal traces only and return higher = more anomalous.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Protocol

import numpy as np

Calls = Sequence[str]


class TraceModel(Protocol):
    name: str

    def fit(self, traces: Sequence[Calls]) -> None: ...

    def score(self, traces: Sequence[Calls]) -> np.ndarray: ...


def _grams(calls: Calls, n: int) -> list[tuple[str, ...]]:
    return [tuple(calls[i : i + n]) for i in range(len(calls) - n + 1)]


class Stide:
    """Fraction of a trace's ``n``-grams absent from the training database.

    >>> m = Stide(n=2)
    >>> m.fit([["a", "b", "c", "a", "b"]])
    >>> m.score([["a", "b", "c"], ["a", "c", "b"]]).tolist()
    [0.0, 1.0]
    """

    def __init__(self, n: int = 6) -> None:
        self.n = n
        self.name = f"STIDE (n={n})"
        self._db: set[tuple[str, ...]] = set()

    def fit(self, traces: Sequence[Calls]) -> None:
        for t in traces:
            self._db.update(_grams(t, self.n))

    def score(self, traces: Sequence[Calls]) -> np.ndarray:
        out = np.zeros(len(traces))
        for i, t in enumerate(traces):
            g = _grams(t, self.n)
            if g:
                out[i] = sum(x not in self._db for x in g) / len(g)
        return out


class _Frequencies:
    def __init__(self) -> None:
        self.vocabulary: dict[str, int] = {}

    def learn_vocabulary(self, traces: Sequence[Calls]) -> None:
        for t in traces:
            for c in t:
                self.vocabulary.setdefault(c, len(self.vocabulary))

    def matrix(self, traces: Sequence[Calls]) -> np.ndarray:
        """Per-trace frequencies over the training vocabulary plus one column for unseen calls."""
        v = len(self.vocabulary)
        out = np.zeros((len(traces), v + 1))
        for i, t in enumerate(traces):
            for c, k in Counter(t).items():
                out[i, self.vocabulary.get(c, v)] += k
            out[i] /= max(1, len(t))
        return out


class BagNearestNeighbour:
    """Hellinger distance of a trace's syscall distribution to the nearest training trace.

    >>> m = BagNearestNeighbour()
    >>> m.fit([["a", "a", "b"], ["c"]])
    >>> s = m.score([["a", "b", "a"], ["b", "b"]])
    >>> round(float(s[0]), 6), bool(s[1] > 0.5)
    (0.0, True)
    """

    name = "bag-of-syscalls 1-NN (Hellinger)"

    def __init__(self) -> None:
        self._freq = _Frequencies()
        self._train = np.zeros((0, 1))

    def fit(self, traces: Sequence[Calls]) -> None:
        self._freq.learn_vocabulary(traces)
        self._train = np.sqrt(self._freq.matrix(traces))

    def score(self, traces: Sequence[Calls]) -> np.ndarray:
        q = np.sqrt(self._freq.matrix(traces))
        out = np.empty(len(traces))
        for start in range(0, len(traces), 512):
            block = q[start : start + 512]
            bc = np.clip(block @ self._train.T, 0.0, 1.0)  # Bhattacharyya coefficients
            out[start : start + 512] = np.sqrt(1.0 - bc.max(axis=1))
        return out


class IsolationForestBaseline:
    """scikit-learn ``IsolationForest`` with default settings on syscall frequencies."""

    name = "IsolationForest (syscall frequencies)"

    def __init__(self, seed: int = 0) -> None:
        from sklearn.ensemble import IsolationForest

        self._freq = _Frequencies()
        self._model = IsolationForest(random_state=seed)

    def fit(self, traces: Sequence[Calls]) -> None:
        self._freq.learn_vocabulary(traces)
        self._model.fit(self._freq.matrix(traces))

    def score(self, traces: Sequence[Calls]) -> np.ndarray:
        return np.asarray(-self._model.score_samples(self._freq.matrix(traces)))


class HalfSpaceTreesBaseline:
    """River ``MinMaxScaler | HalfSpaceTrees`` (default settings, fixed seed) on syscall frequencies."""

    name = "River MinMaxScaler|HalfSpaceTrees (defaults)"

    def __init__(self, seed: int = 42) -> None:
        from river import anomaly, compose, preprocessing

        self._model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=seed))

    @staticmethod
    def _x(t: Calls) -> dict[str, float]:
        n = max(1, len(t))
        return {c: k / n for c, k in Counter(t).items()}

    def fit(self, traces: Sequence[Calls]) -> None:
        for t in traces:
            self._model.learn_one(self._x(t))

    def score(self, traces: Sequence[Calls]) -> np.ndarray:
        return np.array([self._model.score_one(self._x(t)) for t in traces], dtype=np.float64)


def default_baselines() -> list[TraceModel]:
    return [Stide(6), BagNearestNeighbour(), IsolationForestBaseline(), HalfSpaceTreesBaseline()]

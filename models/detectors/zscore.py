"""Standard-score detector over log-rate features, the continuous tier for rates and mixes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from river import base

__all__ = ["ZScoreDetector"]


class ZScoreDetector(base.AnomalyDetector):
    """Per-feature running mean and variance; scores by the largest standard scores.

    Each feature keeps a mean and variance learnt online (Welford, with the effective count capped at
    ``window`` so that old behaviour fades and one window can move the estimate by at most
    ``1 / window`` of the way).  A vector's score is the root mean square of its ``top_k`` largest
    standard scores ``|x - mean| / (std + std_floor)``: a single feature far off its baseline raises
    the score as much as several moderately off.  ``std_floor`` (in the input's units) keeps features
    that never varied from turning noise into alarms.

    ``learn_many`` / ``score_many`` take a 2-D array whose columns are ``features`` (or a DataFrame) and
    are vectorised: the service scores and learns a batch per image in a few NumPy calls.

    Parameters
    ----------
    window
        Effective memory, in vectors.
    std_floor
        Added to every standard deviation.
    top_k
        How many of the largest standard scores make up the score.
    features
        Fixed feature names for the array methods; ``None`` learns names as they appear.
    upper_only
        Count only values above the mean (a drop in activity is rarely an attack).
    clip
        Once warm (30 vectors), values are clipped to ``mean ± clip x (std + std_floor)`` before they
        are learnt, and a variance may grow by at most a factor ``1 + 2 / window`` (plus
        ``std_floor² / window``) per vector learnt.  Together they bound how fast the baseline can
        move: a slow ramp cannot drag the mean faster than ``clip`` deviations per ``window`` vectors,
        nor widen the spread to hide in.  ``None`` learns values as they are.

    Examples
    --------
    >>> det = ZScoreDetector(std_floor=0.1)
    >>> for i in range(50):
    ...     det.learn_one({"reads": 3.0 + (i % 5) * 0.1, "execs": 0.0})
    >>> normal = det.score_one({"reads": 3.2, "execs": 0.0})
    >>> attack = det.score_one({"reads": 3.2, "execs": 2.7})
    >>> normal < 1.0 < attack
    True
    >>> round(det.mean("reads"), 2)
    3.2
    """

    def __init__(
        self,
        window: int = 2000,
        std_floor: float = 0.1,
        top_k: int = 3,
        features: tuple[str, ...] | None = None,
        upper_only: bool = False,
        clip: float | None = None,
    ) -> None:
        if window < 2:
            raise ValueError(f"window must be at least 2, got {window}")
        if std_floor <= 0:
            raise ValueError(f"std_floor must be positive, got {std_floor}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.window = window
        self.std_floor = std_floor
        self.top_k = top_k
        self.features = features
        self.upper_only = upper_only
        if clip is not None and not clip > 0:
            raise ValueError(f"clip must be positive or None, got {clip}")
        self.clip = clip
        self._index: dict[Any, int] = {}
        self._mean = np.zeros(0)
        self._m2 = np.zeros(0)
        self._var_floor = np.zeros(0)  # see hold_spread()
        self._n = 0.0
        if features is not None:
            self._grow(list(features))

    # -- state -----------------------------------------------------------------------------------

    def _grow(self, names: list[Any]) -> None:
        new = [n for n in names if n not in self._index]
        if not new:
            return
        for name in new:
            self._index[name] = len(self._index)
        pad = len(self._index) - len(self._mean)
        self._mean = np.concatenate([self._mean, np.zeros(pad)])
        self._m2 = np.concatenate([self._m2, np.zeros(pad)])
        self._var_floor = np.concatenate([self._var_floor, np.zeros(pad)])

    @property
    def n_seen(self) -> float:
        """Effective number of vectors learnt (capped at ``window``)."""
        return self._n

    def mean(self, name: Any) -> float:
        i = self._index.get(name)
        return 0.0 if i is None else float(self._mean[i])

    def std(self, name: Any) -> float:
        i = self._index.get(name)
        return 0.0 if i is None else float(self._std()[i])

    def means(self) -> np.ndarray:
        return self._mean.copy()

    def stds(self) -> np.ndarray:
        return self._std()

    def _std(self) -> np.ndarray:
        if self._n < 2:
            return np.zeros_like(self._mean)
        return np.sqrt(np.maximum(self._m2 / (self._n - 1), 0.0))

    def hold_spread(self) -> None:
        """From now on, bounded learning (``learn_many(bound=True)``) keeps every feature's variance at
        least where it is now.

        A baseline calls this when its thresholds are calibrated: they were set against this spread,
        and windows that are rare but normal (a nightly upload, a burst of requests) are flagged and so
        never learnt again; without the floor the memory would forget them, the spread would shrink
        and the same normal burst would score higher every day.
        """
        self._var_floor = self._std() ** 2

    def _row(self, x: Mapping[Any, Any], grow: bool) -> np.ndarray:
        if grow:
            self._grow([k for k in x if k not in self._index])
        row = np.zeros(len(self._mean))
        extra = []
        for k, v in x.items():
            i = self._index.get(k)
            if i is None:
                extra.append(float(v))
            else:
                row[i] = float(v)
        if extra:  # features never learnt: mean 0, std 0
            row = np.concatenate([row, np.asarray(extra)])
        return row

    def _as_array(self, X: Any) -> np.ndarray:
        if hasattr(X, "columns"):  # pandas DataFrame
            self._grow(list(X.columns))
            out = np.zeros((len(X), len(self._mean)))
            for j, col in enumerate(X.columns):
                out[:, self._index[col]] = X.iloc[:, j].to_numpy(dtype=float)
            return out
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != len(self._mean):
            raise ValueError(f"expected an array of shape (n, {len(self._mean)}), got {arr.shape}")
        return arr

    # -- River contract --------------------------------------------------------------------------

    def learn_one(self, x: dict) -> None:
        self._learn(self._row(x, grow=True)[None, :])

    def score_one(self, x: dict) -> float:
        return float(self._scores(self._row(x, grow=False)[None, :])[0])

    def learn_many(self, X: Any, *, bound: bool = True) -> None:
        """Learn a batch (rows in arrival order).

        ``bound=False`` skips the ``clip`` bounds for this batch (a baseline's initial learning period,
        when the spread is still being discovered).
        """
        self._learn(self._as_array(X), bound)

    def score_many(self, X: Any) -> np.ndarray:
        """Scores of a batch, without learning it."""
        return self._scores(self._as_array(X))

    def standard_scores(self, X: np.ndarray) -> np.ndarray:
        """Signed standard scores ``(x - mean) / (std + std_floor)`` per feature."""
        mean = self._mean
        std = self._std()
        width = X.shape[1]
        if width > len(mean):  # features never learnt
            mean = np.concatenate([mean, np.zeros(width - len(mean))])
            std = np.concatenate([std, np.zeros(width - len(std))])
        return (X - mean) / (std + self.std_floor)

    # -- internals -------------------------------------------------------------------------------

    def _scores(self, X: np.ndarray) -> np.ndarray:
        if X.shape[1] == 0:
            return np.zeros(len(X))
        z = self.standard_scores(X)
        if self.upper_only:
            z = np.maximum(z, 0.0)
        z2 = z**2
        k = min(self.top_k, z2.shape[1])
        top = np.partition(z2, z2.shape[1] - k, axis=1)[:, -k:]
        return np.sqrt(top.mean(axis=1))

    def _learn(self, X: np.ndarray, bound: bool = True) -> None:
        if len(X) == 0:
            return
        # Chan et al.'s parallel update of (count, mean, M2), the old count capped at window - len(X)
        # so that the batch keeps at least its own weight.
        bounded = bound and self.clip is not None and self._n >= 30 and X.shape[1] == len(self._mean)
        if bounded:
            old_std = self._std()
            old_var = old_std**2
            spread = self.clip * (old_std + self.std_floor)  # type: ignore[operator]
            X = np.minimum(np.maximum(X, self._mean - spread), self._mean + spread)
        n_b = float(len(X))
        mean_b = X.mean(axis=0)
        m2_b = ((X - mean_b) ** 2).sum(axis=0)
        n_a = min(self._n, max(self.window - n_b, 1.0)) if self._n else 0.0
        if self._n and n_a < self._n:  # forget proportionally
            self._m2 = self._m2 * (n_a / self._n)
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + delta**2 * (n_a * n_b / n)
        self._n = n
        if bounded:
            cap = old_var * (1.0 + 2.0 / self.window) ** n_b + self.std_floor**2 * n_b / self.window
            self._m2 = np.minimum(self._m2, cap * (n - 1))
        if bound and len(self._var_floor) == len(self._m2) and n > 1:
            self._m2 = np.maximum(self._m2, self._var_floor * (n - 1))

    # -- persistence (no pickle) ---------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self._mean.copy(), "m2": self._m2.copy(), "n": np.array([self._n]),
                "var_floor": self._var_floor.copy()}

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore state written by :meth:`to_arrays` (feature order must be ``features``)."""
        mean, m2, n = arrays["mean"], arrays["m2"], arrays["n"]
        if mean.shape != self._mean.shape or m2.shape != mean.shape or n.shape != (1,):
            raise ValueError(f"state shapes {mean.shape}/{m2.shape} do not match {self._mean.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(m2)) and math.isfinite(n[0])):
            raise ValueError("state contains non-finite values")
        self._mean, self._m2, self._n = mean.astype(np.float64), m2.astype(np.float64), float(n[0])
        floor = arrays.get("var_floor")  # absent in state written before hold_spread() existed: no floor
        if floor is not None:
            if floor.shape != mean.shape or not np.all(np.isfinite(floor)) or np.any(floor < 0):
                raise ValueError("var_floor does not match the features or is not finite and >= 0")
            self._var_floor = floor.astype(np.float64)
        else:
            self._var_floor = np.zeros_like(self._mean)

    @classmethod
    def _unit_test_params(cls) -> Any:
        yield {}
        yield {"window": 50, "top_k": 1, "upper_only": True, "clip": 3.0}

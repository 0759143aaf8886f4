"""Why a window was flagged: the features that deviate most, in their own units."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from baseliner.models.rate_features import FEATURES


def fmt(value: float | None) -> str:
    """Numbers as explanations (and the console) write them.

    >>> fmt(1234.5), fmt(3.14159), fmt(0.0123), fmt(None)
    ('1,234', '3.1', '0.012', '-')
    """
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}"
    return f"{value:.2g}"


@dataclass(frozen=True, slots=True)
class Deviation:
    """One feature's observed value against its baseline (all in the feature's unit)."""

    feature: str
    observed: float
    mean: float
    std: float
    unit: str
    z: float

    def text(self) -> str:
        """``"syscall.execve: 14.0 calls/s, baseline 0.02 ± 0.1 calls/s"``."""
        return (
            f"{self.feature}: {fmt(self.observed)} {self.unit}, "
            f"baseline {fmt(self.mean)} ± {fmt(self.std)} {self.unit}"
        )


def deviations(x: np.ndarray, z: np.ndarray, mean: np.ndarray, std: np.ndarray, top: int) -> list[Deviation]:
    """Top ``top`` features of one window by ``|z|`` (log-rate space in, feature units out).

    ``x``, ``z``, ``mean`` and ``std`` are rows over :data:`baseliner.models.rate_features.FEATURES`.  The baseline's
    spread is reported as the half-width of ``mean ± std`` mapped back through ``expm1``.

    >>> import numpy as np
    >>> from baseliner.models.rate_features import FEATURE_INDEX, N_FEATURES
    >>> x, mean, std = np.zeros(N_FEATURES), np.zeros(N_FEATURES), np.full(N_FEATURES, 0.05)
    >>> j = FEATURE_INDEX["syscall.execve"]
    >>> x[j], mean[j] = np.log1p(14.0), np.log1p(0.02)
    >>> z = (x - mean) / (std + 0.1)
    >>> deviations(x, z, mean, std, top=1)[0].text()
    'syscall.execve: 14.0 calls/s, baseline 0.02 ± 0.052 calls/s'
    """
    if top <= 0:
        return []
    order = np.argsort(-np.abs(z))[:top]
    out = []
    for j in order:
        if abs(z[j]) < 1e-9:
            break
        m = math.expm1(mean[j])
        out.append(
            Deviation(
                feature=FEATURES[j].name,
                observed=math.expm1(x[j]),
                mean=m,
                std=math.expm1(mean[j] + std[j]) - m,
                unit=FEATURES[j].unit,
                z=float(z[j]),
            )
        )
    return out

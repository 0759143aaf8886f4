"""River's own estimator checks, run over every Baseliner detector.

River's anomaly checks stream ``datasets.CreditCard`` (a download). These machines are offline, so the
dataset hook is pointed at a local labelled stream of the same shape instead: mostly normal points
from one distribution, a few anomalies far from it. Every other check runs exactly as River wrote it.
"""

from __future__ import annotations

import importlib
import pkgutil

import baseliner.models.detectors
import numpy as np
import pytest
from river import base, checks


def local_anomaly_stream(scale: int = 1):
    """Non-negative count-like features; anomalies are far larger on their usual features and also
    show features normal points never have (what both a rate model and a sequence model look for)."""
    rng = np.random.default_rng(42)
    n = 1000 * scale
    for i in range(n):
        anomalous = i > 50 and rng.random() < 0.02
        x = {f"v{j}": float(abs(rng.normal(3.0, 1.0))) for j in range(5)}
        if anomalous:
            x.update({f"v{j}": float(6.0 + abs(rng.normal(3.0, 1.0))) for j in range(5, 8)})
            x["v0"] += 6.0
        yield x, anomalous


def _local_datasets(model, scale=1):
    if isinstance(model, base.AnomalyDetector):
        yield list(local_anomaly_stream(scale))
        return
    raise AssertionError(f"{model!r} is not an anomaly detector")


def _detectors() -> list[base.AnomalyDetector]:
    found = []
    for info in pkgutil.iter_modules(baseliner.models.detectors.__path__):
        module = importlib.import_module(f"baseliner.models.detectors.{info.name}")
        for name in getattr(module, "__all__", []):
            cls = getattr(module, name)
            if isinstance(cls, type) and issubclass(cls, base.AnomalyDetector):
                for params in cls._unit_test_params():
                    found.append(cls(**params))
    return found


DETECTORS = _detectors()


def test_every_detector_is_found():
    names = {type(d).__name__ for d in DETECTORS}
    assert "ZScoreDetector" in names


@pytest.mark.parametrize("detector", DETECTORS, ids=lambda d: repr(d))
def test_river_estimator_checks(detector, monkeypatch):
    monkeypatch.setattr(checks, "_yield_datasets", _local_datasets)
    ran = 0
    for check in checks.yield_checks(detector):
        if check.__name__ in detector._unit_test_skips():
            continue
        check(detector.clone())
        ran += 1
    assert ran > 10

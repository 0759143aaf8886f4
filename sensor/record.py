"""``baseliner sensor record --out FILE``: write a source's windows to a recording instead of a service.

The format is ``models/recording.py``'s (JSON lines, optional ``.gz``); a synthetic recording's header
carries the scenario and its ground-truth attacks, so evaluation can score a detector on it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

from baseliner.models.recording import RecordingWriter
from baseliner.models.vector import FeatureVector
from baseliner.sensor.synthetic import SyntheticSource

log = logging.getLogger(__name__)


def synthetic_header(source: SyntheticSource) -> dict[str, Any]:
    scenario = dataclasses.asdict(source.config)
    scenario["attacks"] = [dataclasses.asdict(s) for s in source.config.attack_specs]
    return {"source": "synthetic", "scenario": scenario, "attacks": [a.to_dict() for a in source.attacks]}


def record(windows: Iterable[list[FeatureVector]], out: str, header: dict[str, Any] | None = None,
           max_windows: int = 0) -> int:
    """Write ``windows`` to ``out``; returns the number of vectors written."""
    with RecordingWriter(out, header) as w:
        for n, vectors in enumerate(windows, 1):
            w.write(vectors)
            if max_windows and n >= max_windows:
                break
        log.info("recorded %d vectors to %s", w.vectors, out)
        return w.vectors

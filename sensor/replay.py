"""``--source replay FILE``: the windows of a recording (``models/recording.py``), optionally paced.

Vectors are grouped into windows by ``window_start`` as they appear in the file.  Malformed lines are
logged, counted (:attr:`ReplaySource.bad_lines`) and skipped; the rest of the recording is replayed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from baseliner.models.recording import RecordingReader
from baseliner.models.vector import FeatureVector


class ReplaySource:
    """Iterate to get one ``list[FeatureVector]`` per window of the recording at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._reader = RecordingReader(path, skip_bad=True)
        self.header: dict[str, Any] = self._reader.header

    @property
    def bad_lines(self) -> int:
        return self._reader.bad_lines

    @property
    def attacks(self) -> list[dict[str, Any]]:
        """Ground truth stored in the recording's header (synthetic recordings), else empty."""
        return list(self.header.get("attacks", []))

    def __iter__(self) -> Iterator[list[FeatureVector]]:
        return self._reader.windows()

    def close(self) -> None:
        self._reader.close()

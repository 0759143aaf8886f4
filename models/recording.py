"""Recordings: feature vectors as JSON lines, written by ``baseliner sensor record``, read by replay and evaluation.

The format (version 1) is in ``docs/sensor-client.md`` ("Recordings"): an optional header line
``{"format": "baseliner-vectors", "version": 1, ...}``, then one :class:`~baseliner.models.vector.FeatureVector`
per line with its fields by name, in event-time order; unknown fields are an error.  A line that does not
parse raises :class:`RecordingError` with its line number or, with ``skip_bad=True``, is logged, counted in
:attr:`RecordingReader.bad_lines` and skipped.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, cast

from baseliner.models.errors import BaselinerError
from baseliner.models.vector import Endpoint, FeatureVector, Identity

log = logging.getLogger(__name__)

FORMAT = "baseliner-vectors"
VERSION = 1

_VECTOR_FIELDS = {f.name for f in dataclasses.fields(FeatureVector)}
_IDENTITY_FIELDS = {f.name for f in dataclasses.fields(Identity) if f.init}
_ENDPOINT_FIELDS = {f.name for f in dataclasses.fields(Endpoint)}


class RecordingError(BaselinerError):
    """A recording that cannot be read (with the line that failed)."""


def vector_to_dict(v: FeatureVector) -> dict[str, Any]:
    d = {f: getattr(v, f) for f in _VECTOR_FIELDS}
    d["identity"] = {f: getattr(v.identity, f) for f in _IDENTITY_FIELDS}
    d["endpoints"] = [{f: getattr(e, f) for f in _ENDPOINT_FIELDS} for e in v.endpoints]
    d["ngrams"] = {str(k): c for k, c in v.ngrams.items()}
    d["syscalls"] = dict(v.syscalls)
    d["executables"] = list(v.executables)
    d["sensitive_paths"] = list(v.sensitive_paths)
    return d


def vector_from_dict(d: dict[str, Any]) -> FeatureVector:
    """The vector a :func:`vector_to_dict` object describes; ValueError/TypeError when malformed.

    >>> v = FeatureVector(Identity("n", "c", "nginx"), 1.7e9, 10.0, {"read": 1}, {5: 2},
    ...                   endpoints=[Endpoint("10.0.0.1", 443)])
    >>> vector_from_dict(json.loads(json.dumps(vector_to_dict(v)))) == v
    True
    """
    if not isinstance(d, dict):
        raise TypeError("a vector must be a JSON object")
    unknown = set(d) - _VECTOR_FIELDS
    if unknown:
        raise ValueError(f"unknown vector fields: {', '.join(sorted(unknown))}")
    kw = dict(d)
    ident = kw.get("identity")
    if not isinstance(ident, dict):
        raise ValueError("identity must be an object")
    bad = set(ident) - _IDENTITY_FIELDS
    if bad:
        raise ValueError(f"unknown identity fields: {', '.join(sorted(bad))}")
    kw["identity"] = Identity(**ident)
    eps = []
    for e in kw.get("endpoints", ()):
        if not isinstance(e, dict) or set(e) - _ENDPOINT_FIELDS:
            raise ValueError(f"bad endpoint: {e!r}")
        eps.append(Endpoint(**e))
    kw["endpoints"] = eps
    ngrams = kw.get("ngrams", {})
    if not isinstance(ngrams, dict):
        raise ValueError("ngrams must be an object")
    kw["ngrams"] = {int(k): c for k, c in ngrams.items()}
    for key in ("window_start", "window_seconds"):
        if key not in kw:
            raise ValueError(f"missing {key}")
    return FeatureVector(**kw)


def _open(path: str | Path, mode: str) -> IO[str]:
    p = str(path)
    if p == "-":
        import sys

        return io.TextIOWrapper(sys.stdout.buffer if "w" in mode else sys.stdin.buffer, encoding="utf-8")
    if p.endswith(".gz"):
        return cast(IO[str], gzip.open(p, mode + "t", encoding="utf-8"))
    return open(p, mode, encoding="utf-8")


class RecordingWriter:
    """Append vectors to a recording (``.gz`` compresses; ``-`` is stdout)."""

    def __init__(self, path: str | Path, header: dict[str, Any] | None = None) -> None:
        self.path = str(path)
        self._f = _open(path, "w")
        self.vectors = 0
        head = {"format": FORMAT, "version": VERSION}
        head.update(header or {})
        self._f.write(json.dumps(head, sort_keys=True) + "\n")

    def write(self, vectors: Iterable[FeatureVector]) -> None:
        f = self._f
        for v in vectors:
            f.write(json.dumps(vector_to_dict(v), separators=(",", ":")) + "\n")
            self.vectors += 1

    def close(self) -> None:
        self._f.flush()
        if self.path != "-":
            self._f.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingReader:
    """Read a recording: :attr:`header` (``{}`` when absent), then iterate vectors or windows."""

    def __init__(self, path: str | Path, skip_bad: bool = False) -> None:
        self.path = str(path)
        self.skip_bad = skip_bad
        self.bad_lines = 0
        self.header: dict[str, Any] = {}
        self._f = _open(path, "r")
        self._line_no = 0
        self._pending: str | None = None
        try:
            first = self._f.readline()
        except (OSError, UnicodeDecodeError, EOFError) as exc:
            raise RecordingError(f"{self.path}: cannot read ({exc})") from None
        self._line_no = 1
        if first.strip():
            try:
                obj = json.loads(first)
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict) and "format" in obj:
                if obj.get("format") != FORMAT:
                    raise RecordingError(f"{self.path}: not a Baseliner recording (format {obj.get('format')!r})")
                if obj.get("version") != VERSION:
                    raise RecordingError(f"{self.path}: recording version {obj.get('version')!r} is not "
                                         f"supported (this version reads {VERSION})")
                self.header = obj
            else:
                self._pending = first

    def _lines(self) -> Iterator[tuple[int, str]]:
        if self._pending is not None:
            yield 1, self._pending
            self._pending = None
        try:
            for line in self._f:
                self._line_no += 1
                yield self._line_no, line
        except (OSError, UnicodeDecodeError, EOFError) as exc:
            raise RecordingError(f"{self.path}: line {self._line_no + 1}: cannot read ({exc})") from None

    def vectors(self) -> Iterator[FeatureVector]:
        for no, line in self._lines():
            if not line.strip():
                continue
            try:
                yield vector_from_dict(json.loads(line))
            except (ValueError, TypeError) as exc:
                msg = f"{self.path}: line {no}: not a feature vector ({exc})"
                if not self.skip_bad:
                    raise RecordingError(msg) from None
                self.bad_lines += 1
                log.warning("%s; skipped", msg)

    def windows(self) -> Iterator[list[FeatureVector]]:
        """Vectors grouped by window start (consecutive runs with the same ``window_start``)."""
        group: list[FeatureVector] = []
        for v in self.vectors():
            if group and v.window_start != group[0].window_start:
                yield group
                group = []
            group.append(v)
        if group:
            yield group

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

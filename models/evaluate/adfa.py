"""ADFA-LD, read in place from its zip.

ADFA-LD (Creech & Hu, 2013) holds one trace per file: a line of i386 syscall numbers, no timestamps,
no thread ids.  Labels come from the folder: ``Training_Data_Master`` (normal, for learning),
``Validation_Data_Master`` (normal, for testing) and ``Attack_Data_Master/<Type>_<n>/`` (attacks).
Numbers are mapped to canonical names with the i386 table (:func:`baseliner.models.syscalls.name_of`).
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from baseliner.models.syscalls import name_of

log = logging.getLogger(__name__)

#: The shared datasets folder: ``$BASELINER_DATASETS``, else ``../shared/datasets`` from the repository root.
DATASETS = Path(os.environ.get("BASELINER_DATASETS")
                or Path(__file__).resolve().parents[2].parent / "shared" / "datasets")
DEFAULT_PATH = DATASETS / "adfa-ld" / "ADFA-LD.zip"

SPLITS = {"Training_Data_Master": "train", "Validation_Data_Master": "validation", "Attack_Data_Master": "attack"}
_ATTACK_DIR = re.compile(r"^(?P<type>.+)_(?P<n>\d+)$")


class DatasetError(Exception):
    """The dataset is missing or not in the expected format."""


@dataclass(frozen=True, slots=True)
class Trace:
    """One labelled, single-threaded syscall trace."""

    name: str  # path inside the archive
    split: str  # "train" | "validation" | "attack"
    attack_type: str  # "" when normal
    calls: tuple[str, ...]  # canonical syscall names, in order

    @property
    def label(self) -> int:
        return 1 if self.split == "attack" else 0


def _classify(member: str) -> tuple[str, str] | None:
    parts = member.split("/")
    for i, part in enumerate(parts):
        if part in SPLITS:
            split = SPLITS[part]
            if split != "attack":
                return split, ""
            if i + 1 < len(parts) - 1:
                m = _ATTACK_DIR.match(parts[i + 1])
                return split, (m.group("type") if m else parts[i + 1])
            return None
    return None


def load_adfa(path: str | Path | None = None, splits: tuple[str, ...] = ("train", "validation", "attack"),
              limit_per_split: int | None = None) -> list[Trace]:
    """Read ADFA-LD traces from the zip at ``path`` (default :data:`DEFAULT_PATH`).

    Traces come in a stable order (sorted by archive path).  ``limit_per_split`` keeps the first ``n``
    traces of each split (for fast tests); attack traces are then taken round-robin over attack types so
    a subset still covers every type.
    """
    p = Path(path) if path is not None else DEFAULT_PATH
    if not p.is_file():
        raise DatasetError(f"ADFA-LD archive not found at {p} (give --adfa PATH)")
    by_split: dict[str, list[Trace]] = {s: [] for s in splits}
    try:
        with zipfile.ZipFile(p) as zf:
            for member in sorted(zf.namelist()):
                if not member.endswith(".txt"):
                    continue
                cls = _classify(member)
                if cls is None or cls[0] not in by_split:
                    continue
                text = zf.read(member).decode("ascii")
                try:
                    nums = [int(t) for t in text.split()]
                except ValueError as exc:
                    raise DatasetError(f"{p}:{member}: not a list of syscall numbers ({exc})") from None
                calls = tuple(name_of(n, "i386") for n in nums)
                by_split[cls[0]].append(Trace(member, cls[0], cls[1], calls))
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"{p}: not a zip archive ({exc})") from None
    out: list[Trace] = []
    for split in splits:
        traces = by_split[split]
        if not traces:
            raise DatasetError(f"{p}: no traces for split {split!r}")
        if limit_per_split is not None:
            traces = _round_robin(traces, limit_per_split) if split == "attack" else traces[:limit_per_split]
        out.extend(traces)
    log.info("ADFA-LD: %s", {s: sum(t.split == s for t in out) for s in splits})
    return out


def _round_robin(traces: list[Trace], n: int) -> list[Trace]:
    groups: dict[str, list[Trace]] = {}
    for t in traces:
        groups.setdefault(t.attack_type, []).append(t)
    out: list[Trace] = []
    i = 0
    while len(out) < n and any(i < len(g) for g in groups.values()):
        for g in groups.values():
            if i < len(g) and len(out) < n:
                out.append(g[i])
        i += 1
    return out

"""Which ADFA-LD traces a run learns from and which it tests on: the standard split, random re-splits of
the normal traces, and splits a user lists in files.

A :class:`Split` holds positions in the list :func:`baseliner.models.evaluate.adfa.load_adfa` returns:
``learn`` in learning order, ``normal`` and ``attack`` the test traces and their labels.

The re-split families (:data:`FAMILIES`) move the line between learning and testing inside ADFA-LD's
normal traces, so a model tuned, knowingly or not, to the standard split shows it:

* ``validation-half``: learn a random half of ``Validation_Data_Master``; test on the other half and on
  all of ``Training_Data_Master`` as normal, and on every attack;
* ``training+validation-half``: learn ``Training_Data_Master`` and a random half of
  ``Validation_Data_Master``; test on the other half and on every attack.

Learning order is the archive's (training before validation, by file name) in both.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from baseliner.models.evaluate.adfa import DatasetError, Trace

FAMILIES = ("validation-half", "training+validation-half")


@dataclass(frozen=True)
class Split:
    """Positions of the learning and test traces (see the module docstring)."""

    name: str
    family: str  # "standard" | one of FAMILIES | "user"
    seed: int | None
    learn: tuple[int, ...]
    normal: tuple[int, ...]
    attack: tuple[int, ...]

    @property
    def test(self) -> tuple[int, ...]:
        return self.normal + self.attack


def _by_split(traces: Sequence[Trace]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {"train": [], "validation": [], "attack": []}
    for i, t in enumerate(traces):
        out[t.split].append(i)
    return out


def standard(traces: Sequence[Trace]) -> Split:
    """Learn ``Training_Data_Master``; test on ``Validation_Data_Master`` and ``Attack_Data_Master``.

    >>> from baseliner.models.evaluate.adfa import Trace
    >>> ts = [Trace("t1", "train", "", ("read",)), Trace("v1", "validation", "", ("read",)),
    ...       Trace("a1", "attack", "X", ("open",))]
    >>> s = standard(ts)
    >>> s.learn, s.normal, s.attack
    ((0,), (1,), (2,))
    """
    parts = _by_split(traces)
    return Split("standard", "standard", None, tuple(parts["train"]), tuple(parts["validation"]),
                 tuple(parts["attack"]))


def resplit(traces: Sequence[Trace], family: str, seed: int) -> Split:
    """One random re-split of ``family`` (:data:`FAMILIES`), drawn with ``seed``.

    >>> from baseliner.models.evaluate.adfa import Trace
    >>> ts = [Trace(f"t{i}", "train", "", ()) for i in range(2)] + [
    ...     Trace(f"v{i}", "validation", "", ()) for i in range(4)] + [Trace("a", "attack", "X", ())]
    >>> s = resplit(ts, "validation-half", 1)
    >>> len(s.learn), sorted(set(s.normal) - set(range(2))) == sorted(set(range(2, 6)) - set(s.learn))
    (2, True)
    >>> r = resplit(ts, "training+validation-half", 1)
    >>> r.learn[:2], len(r.learn), r.attack
    ((0, 1), 4, (6,))
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown re-split family {family!r}; known: {', '.join(FAMILIES)}")
    parts = _by_split(traces)
    validation = parts["validation"]
    half = set(random.Random(seed).sample(validation, len(validation) // 2))
    learnt = [i for i in validation if i in half]
    rest = [i for i in validation if i not in half]
    if family == "validation-half":
        learn, normal = learnt, parts["train"] + rest
    else:
        learn, normal = parts["train"] + learnt, rest
    return Split(f"{family} seed {seed}", family, seed, tuple(learn), tuple(normal), tuple(parts["attack"]))


def _read_names(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read split file {path}: {exc.strerror or exc}") from None
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _index(traces: Sequence[Trace]) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, t in enumerate(traces):
        index[t.name] = i
        index.setdefault(t.name.rsplit("/", 1)[-1], i)
    return index


def listed(traces: Sequence[Trace], path: str | Path, role: str = "list") -> list[int]:
    """Positions of the traces a file lists, in its order: one a line, by archive path
    (``ADFA-LD/Training_Data_Master/UTD-0001.txt``) or file name (``UTD-0001.txt``); blank lines and
    ``#`` comments ignored.  Unknown, repeated or no names are a :class:`DatasetError`."""
    index = _index(traces)
    names = _read_names(Path(path))
    if not names:
        raise DatasetError(f"split file {path} ({role}) lists no traces")
    unknown = [n for n in names if n not in index]
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise DatasetError(f"split file {path} ({role}): unknown trace(s) {', '.join(unknown[:3])}{more}")
    positions = [index[n] for n in names]
    if len(set(positions)) != len(positions):
        twice = next(n for k, n in enumerate(names) if index[n] in positions[:k])
        raise DatasetError(f"split file {path} ({role}): {twice} is listed twice")
    return positions


def from_files(traces: Sequence[Trace], learn: str | Path, normal: str | Path, attack: str | Path) -> Split:
    """A split listed in three files (see :func:`listed`).  The learn file's order is the learning
    order; the files give the labels (a trace listed as attack is scored as one, whatever its folder).
    No trace may be listed in two of them."""
    parts: dict[str, list[int]] = {}
    seen: dict[int, str] = {}
    for role, path in (("learn", learn), ("normal", normal), ("attack", attack)):
        parts[role] = listed(traces, path, role)
        for i in parts[role]:
            if i in seen:
                raise DatasetError(f"split file {path} ({role}): {traces[i].name.rsplit('/', 1)[-1]} is already "
                                   f"listed ({seen[i]})")
            seen[i] = role
    return Split("user", "user", None, tuple(parts["learn"]), tuple(parts["normal"]), tuple(parts["attack"]))

"""Domain-level checks of a :class:`~baseliner.models.vector.FeatureVector` before it may touch a baseline.

Every failure raises :class:`~baseliner.models.errors.ValidationError` with a reason code and a message that
says what was wrong, so the service can reject that one vector, count it, and go on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from itertools import chain
from operator import attrgetter

import numpy as np
from baseliner.models.block import COUNTERS, VectorBlock, row_ids
from baseliner.models.errors import ValidationError
from baseliner.models.ngrams import NUM_BUCKETS
from baseliner.models.vector import MAX_ENDPOINTS, MAX_EXECUTABLES, MAX_SYSCALL_NAMES, FeatureVector, Identity

MAX_NAME_LENGTH = 255
MAX_WINDOW_SECONDS = 3600.0
MAX_PATH_LENGTH = 4096
# Plausible event time: 2000-01-01 .. 2200-01-01.
MIN_TIME, MAX_TIME = 946_684_800.0, 7_258_118_400.0
#: No kernel counts more than this of anything per second (syscalls, bytes, packets ...): a finite count
#: above it over its window is refused as IMPLAUSIBLE rather than clipped into the model.
MAX_RATE_PER_SECOND = 1e12
# OCI image repository: lowercase path components, optional registry host[:port].
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+|[:/][a-zA-Z0-9._-]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

_GOOD_IDENTITIES: dict[Identity, None] = {}  # identities already checked (bounded)
_MAX_GOOD_IDENTITIES = 65_536
# Identity tables (list objects) all of whose identities passed: the service's decoder gives one list per
# distinct table, so a sensor's table is looked at once, not round after round.  The list is held so
# that its id stays its own; cleared with _GOOD_IDENTITIES.
_GOOD_TABLES: dict[int, Sequence[Identity]] = {}
_MAX_GOOD_TABLES = 1024
_GOOD_SYSCALL_NAMES: set[str] = set()  # syscall names already checked (bounded)
_MAX_GOOD_SYSCALL_NAMES = 4096

_COUNTERS = COUNTERS
_COUNTER_GET = attrgetter(*_COUNTERS)


def _count(name: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValidationError("MISSING_FIELD", f"{name} is not a number: {value!r}")
    if not math.isfinite(value):
        raise ValidationError("NOT_FINITE", f"{name} is {value}")
    if value < 0:
        raise ValidationError("NEGATIVE", f"{name} is negative: {value}")


def _identity(ident: Identity) -> None:
    if ident in _GOOD_IDENTITIES:
        return
    if not ident.node:
        raise ValidationError("BAD_IDENTITY", "identity.node is empty")
    if len(ident.node) > MAX_NAME_LENGTH:
        raise ValidationError("BAD_IDENTITY", f"identity.node is longer than {MAX_NAME_LENGTH} characters")
    repo = ident.image_repository
    if not repo:
        raise ValidationError("BAD_IDENTITY", "identity.image_repository is empty")
    if len(repo) > MAX_NAME_LENGTH or not _REPOSITORY.match(repo):
        raise ValidationError("BAD_IDENTITY", f"identity.image_repository is not an image name: {repo[:80]!r}")
    if ident.image_tag and not _TAG.match(ident.image_tag):
        raise ValidationError("BAD_IDENTITY", f"identity.image_tag is not a tag: {ident.image_tag[:80]!r}")
    for field in ("container_id", "container_name", "image_digest", "pod", "namespace"):
        if len(getattr(ident, field)) > MAX_NAME_LENGTH:
            raise ValidationError("BAD_IDENTITY", f"identity.{field} is longer than {MAX_NAME_LENGTH} characters")
    if len(_GOOD_IDENTITIES) >= _MAX_GOOD_IDENTITIES:
        _GOOD_IDENTITIES.clear()
        _GOOD_TABLES.clear()
    _GOOD_IDENTITIES[ident] = None


def _counts_ok(values: Collection[float]) -> bool:
    """Fast check that every value is a finite number >= 0 (C-level sum and min)."""
    if not values:
        return True
    try:
        return math.isfinite(sum(values)) and min(values) >= 0
    except TypeError:
        return False


def validate(v: FeatureVector) -> None:
    """Raise :class:`ValidationError` unless ``v`` is safe to score and learn.

    Valid vectors take a fast path (whole-collection checks); the per-item checks that name the
    culprit run only when that fails.

    >>> from baseliner.models.vector import FeatureVector, Identity
    >>> v = FeatureVector(Identity("node-1", "c1", "nginx", "1.27"), 1.7e9, 5.0, {"read": 10})
    >>> validate(v)
    >>> v.syscalls["write"] = float("nan")
    >>> validate(v)
    Traceback (most recent call last):
    ...
    baseliner.models.errors.ValidationError: syscall write is nan
    """
    _identity(v.identity)

    for name, value in (("window_start", v.window_start), ("window_seconds", v.window_seconds)):
        if not math.isfinite(value):
            raise ValidationError("NOT_FINITE", f"{name} is {value}")
    if not MIN_TIME <= v.window_start <= MAX_TIME:
        raise ValidationError("BAD_WINDOW", f"window_start {v.window_start} is not a plausible epoch time")
    if not 0 < v.window_seconds <= MAX_WINDOW_SECONDS:
        raise ValidationError("BAD_WINDOW", f"window_seconds {v.window_seconds} is not in (0, {MAX_WINDOW_SECONDS}]")
    if not math.isfinite(v.seconds_since_start):
        raise ValidationError("NOT_FINITE", f"seconds_since_start is {v.seconds_since_start}")

    calls = v.syscalls
    if len(calls) > MAX_SYSCALL_NAMES:
        raise ValidationError("TOO_LARGE", f"{len(calls)} syscall names (max {MAX_SYSCALL_NAMES})")
    if calls and not (_counts_ok(calls.values()) and calls.keys() <= _GOOD_SYSCALL_NAMES):
        for name, count in calls.items():
            if not isinstance(name, str) or not name or len(name) > 64:
                raise ValidationError("BAD_REFERENCE", f"syscall name {str(name)[:80]!r} is empty or too long")
            _count(f"syscall {name}", count)
        if len(_GOOD_SYSCALL_NAMES) + len(calls) > _MAX_GOOD_SYSCALL_NAMES:
            _GOOD_SYSCALL_NAMES.clear()
        _GOOD_SYSCALL_NAMES.update(calls)
    grams = v.ngrams
    if grams and not (_counts_ok(grams.values()) and min(grams) >= 0 and max(grams) < NUM_BUCKETS):
        for bucket, count in grams.items():
            if not 0 <= bucket < NUM_BUCKETS:
                raise ValidationError("BAD_REFERENCE", f"n-gram bucket {bucket} outside [0, {NUM_BUCKETS})")
            _count(f"n-gram bucket {bucket}", count)
    counters = _COUNTER_GET(v)
    if not _counts_ok(counters):
        for attr in _COUNTERS:
            _count(attr, getattr(v, attr))
    limit = MAX_RATE_PER_SECOND * v.window_seconds
    if max(counters) > limit or (calls and max(calls.values()) > limit) or (grams and max(grams.values()) > limit):
        name, value = max(
            chain(zip(_COUNTERS, counters, strict=True), (("syscall " + k, c) for k, c in calls.items()),
                  ((f"n-gram bucket {k}", c) for k, c in grams.items())),
            key=lambda kv: kv[1],
        )
        raise ValidationError(
            "IMPLAUSIBLE", f"{name} is {value:g} in a {v.window_seconds:g} s window (more than "
            f"{MAX_RATE_PER_SECOND:g} per second)",
        )

    for attr, items, limit in (
        ("executables", v.executables, MAX_EXECUTABLES),
        ("endpoints", v.endpoints, MAX_ENDPOINTS),
        ("sensitive_paths", v.sensitive_paths, MAX_EXECUTABLES),
    ):
        if len(items) > limit:
            raise ValidationError("TOO_LARGE", f"{len(items)} {attr} (max {limit})")
    for path in (*v.executables, *v.sensitive_paths):
        if not path or len(path) > MAX_PATH_LENGTH:
            raise ValidationError("BAD_REFERENCE", "an executable or path is empty or too long")
    for ep in v.endpoints:
        if not 0 <= ep.port <= 65535:
            raise ValidationError("BAD_REFERENCE", f"endpoint port {ep.port} out of range")
        if not ep.address or len(ep.address) > 64:
            raise ValidationError("BAD_REFERENCE", "endpoint address is empty or too long")


def _all_known_good(identities: Sequence[Identity]) -> bool:
    """Whether every identity passed :func:`_identity` before (the same table: one lookup; else one
    C-level pass; the usual batch)."""
    if _GOOD_TABLES.get(id(identities)) is identities:
        return True
    try:
        good = all(map(_GOOD_IDENTITIES.__contains__, identities))
    except TypeError:  # something unhashable that is no Identity: the loop says so
        return False
    if good:
        _remember_table(identities)
    return good


def _bad_syscall_names(names: list[str]) -> np.ndarray | None:
    """Which syscall names of a table are bad (not a string, empty, longer than 64), or ``None`` when all
    are good.  Good names are remembered (bounded): a table of known names costs one set comparison."""
    try:
        if set(names) <= _GOOD_SYSCALL_NAMES:
            return None
    except TypeError:  # something unhashable: the loop says so
        pass
    bad = np.fromiter((not isinstance(x, str) or not x or len(x) > 64 for x in names), dtype=bool, count=len(names))
    if len(_GOOD_SYSCALL_NAMES) + len(names) <= _MAX_GOOD_SYSCALL_NAMES:
        _GOOD_SYSCALL_NAMES.update(x for x, b in zip(names, bad.tolist(), strict=True) if not b)
    return bad if bad.any() else None


def _remember_table(identities: Sequence[Identity]) -> None:
    if len(_GOOD_TABLES) >= _MAX_GOOD_TABLES:
        _GOOD_TABLES.clear()
    _GOOD_TABLES[id(identities)] = identities


def bad_identities(identities: Sequence[Identity]) -> np.ndarray | None:
    """Which identities of a table are bad (a bool each; not an :class:`Identity` counts as bad), or
    ``None`` when all are good.  A table that passed before costs one lookup."""
    if _all_known_good(identities):
        return None
    bad = np.zeros(len(identities), dtype=bool)
    for j, ident in enumerate(identities):
        if not isinstance(ident, Identity):
            bad[j] = True
            continue
        try:
            _identity(ident)
        except ValidationError:
            bad[j] = True
    if not bad.any():
        _remember_table(identities)
        return None
    return bad


def validate_block(
    block: VectorBlock, *, identities_checked: bool = False, bad_ident: np.ndarray | None = None
) -> tuple[np.ndarray, list[ValidationError]]:
    """Check every window of a block at once: ``(ok, errors)``.

    ``ok`` is a boolean mask of the windows that are safe to score and learn; ``errors`` has one
    :class:`ValidationError` per other window, in row order (its ``index`` is the window's position in its
    batch), with the same reason and message :func:`validate` gives that window on its own.  The checks
    are vectorised; only bad windows are looked at one by one, to say what is wrong with them.

    With ``identities_checked``, the caller has asked :func:`bad_identities` about the block's identity
    table already and passes its answer as ``bad_ident``: e.g. of each batch's table before joining batches
    into one block (:meth:`VectorBlock.concat`), whose joined table is new every time.
    """
    n = len(block)
    bad = np.zeros(n, dtype=bool)
    if n == 0:
        return ~bad, []
    if not identities_checked:
        bad_ident = bad_identities(block.identities)
    not_identities: list[int] = []
    if bad_ident is not None:
        bad |= bad_ident[block.ident]
        not_identities = [j for j in np.flatnonzero(bad_ident).tolist()
                          if not isinstance(block.identities[j], Identity)]
    ws, sec = block.window_start, block.window_seconds
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        bad |= ~((ws >= MIN_TIME) & (ws <= MAX_TIME))  # NaN compares false: bad
        bad |= ~((sec > 0) & (sec <= MAX_WINDOW_SECONDS))
        bad |= ~np.isfinite(block.age)
        limit = MAX_RATE_PER_SECOND * sec
        c = block.counters
        bad |= ~(np.isfinite(c) & (c >= 0) & (c <= limit[:, None])).all(axis=1)
        if len(block.sc_name):
            bad |= np.diff(block.sc_ptr) > MAX_SYSCALL_NAMES
            bad_name = _bad_syscall_names(block.syscall_names)
            cnt = block.sc_count
            # the usual batch: good names, and every count in [0, the lowest window's limit] (NaN fails)
            if bad_name is not None or not (cnt.min() >= 0 and cnt.max() <= limit.min()):
                entry_rows = row_ids(block.sc_ptr)
                bad_entry = ~(np.isfinite(cnt) & (cnt >= 0) & (cnt <= limit[entry_rows]))
                if bad_name is not None:
                    bad_entry |= bad_name[block.sc_name]
                if bad_entry.any():
                    bad[entry_rows[bad_entry]] = True
        if len(block.ng_bucket):
            b, cnt, ptr = block.ng_bucket, block.ng_count, block.ng_ptr
            if b.min() >= 0 and b.max() < NUM_BUCKETS and cnt.min() >= 0:  # (NaN fails the last test)
                # entries are fine: only a window's largest count can be over its limit (or infinite)
                if not cnt.max() <= limit.min():
                    full = np.diff(ptr) > 0
                    bad[full] |= np.maximum.reduceat(cnt, ptr[:-1][full]) > limit[full]
            else:
                entry_rows = row_ids(ptr)
                bad_entry = (b < 0) | (b >= NUM_BUCKETS) | ~(np.isfinite(cnt) & (cnt >= 0) & (cnt <= limit[entry_rows]))
                if bad_entry.any():
                    bad[entry_rows[bad_entry]] = True
    for ptr, items, limit_items in (
        (block.exe_ptr, block.executables, MAX_EXECUTABLES),
        (block.path_ptr, block.sensitive_paths, MAX_EXECUTABLES),
    ):
        if items:
            bad |= np.diff(ptr) > limit_items
            bad_item = np.fromiter((not p or len(p) > MAX_PATH_LENGTH for p in items), dtype=bool, count=len(items))
            if bad_item.any():
                bad[row_ids(ptr)[bad_item]] = True
    if len(block.ep_index):
        bad |= np.diff(block.ep_ptr) > MAX_ENDPOINTS
        bad_ep = np.fromiter(
            (not 0 <= ep.port <= 65535 or not ep.address or len(ep.address) > 64 for ep in block.endpoints),
            dtype=bool, count=len(block.endpoints),
        )
        if bad_ep.any():
            bad[row_ids(block.ep_ptr)[bad_ep[block.ep_index]]] = True
    if not bad.any():
        return ~bad, []
    errors = []
    for i in np.flatnonzero(bad).tolist():
        try:
            validate(block.vector(i))
            err = ValidationError("NEGATIVE", "window has a negative count (its entries for one item add up "
                                  "to a valid total, but an entry is negative or not finite)")
        except ValidationError as e:
            err = e
        except Exception:  # a value validation did not foresee: the window is refused, the rest goes on
            err = ValidationError("UNSPECIFIED", "vector could not be validated")
        err.index = int(block.index[i])
        errors.append(err)
    if not_identities:  # keep the identity table usable for the windows that remain (a copy: tables are shared)
        block.identities = [Identity("", "", "") if j in not_identities else ident
                            for j, ident in enumerate(block.identities)]
    block.shared.clear()
    return ~bad, errors

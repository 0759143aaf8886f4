"""Domain-level checks of windows before they may touch a baseline.

:func:`validate_block` checks every window of a :class:`~baseliner.models.block.VectorBlock` at once;
:func:`validate` is a block of one window.  Every failure is a :class:`~baseliner.models.errors.ValidationError`
with a reason code and a message that says what was wrong, so the service can reject that one window,
count it, and go on.

What passed before is remembered by content, never by object: identities (frozen, hashable), identity
tables (:class:`~baseliner.models.block.TableMemo`) and syscall names, bounded.  A table changed after it
was checked is checked again, entry by entry.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from itertools import chain

import numpy as np
from baseliner.models.block import COUNTERS, TableMemo, VectorBlock, row_ids
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

_GOOD_IDENTITIES: set[Identity] = set()  # identities that passed (bounded)
_GOOD_TABLES: TableMemo[bool] = TableMemo()  # identity tables all of whose identities passed
_MAX_GOOD_IDENTITIES = 65_536
_GOOD_SYSCALL_NAMES: set[str] = set()  # syscall names that passed (bounded)
_MAX_GOOD_SYSCALL_NAMES = 4096
#: What a window whose identity is no :class:`Identity` at all (an in-process caller's mistake) is given
#: in the block's table once it is refused, so the block's other windows can go on.
_PLACEHOLDER = Identity("", "", "")


def validate(v: FeatureVector) -> None:
    """Raise :class:`ValidationError` unless ``v`` is safe to score and learn (:func:`validate_block` of a
    block of one window).

    >>> from baseliner.models.vector import FeatureVector, Identity
    >>> v = FeatureVector(Identity("node-1", "c1", "nginx", "1.27"), 1.7e9, 5.0, {"read": 10})
    >>> validate(v)
    >>> v.syscalls["write"] = float("nan")
    >>> validate(v)
    Traceback (most recent call last):
    ...
    baseliner.models.errors.ValidationError: syscall write is nan
    """
    try:
        block = VectorBlock.from_vectors([v], index=[-1])
    except Exception:  # a value that is no number at all: say which
        raise _error(v, -1) from None
    _, errors = validate_block(block)
    if errors:
        raise errors[0]


def validate_block(block: VectorBlock) -> tuple[np.ndarray, list[ValidationError]]:
    """Check every window of a block at once: ``(ok, errors)``.

    ``ok`` is a boolean mask of the windows that are safe to score and learn; ``errors`` has one
    :class:`ValidationError` per other window, in row order (its ``index`` is the window's position in its
    batch).  The checks are array operations over the whole block; only the windows found bad are looked
    at one by one, to say what is wrong with them.  Entries of the block's identity table that are no
    :class:`Identity` at all are replaced in the block (not in the caller's table) once their windows are
    refused.

    >>> from baseliner.models.vector import FeatureVector, Identity
    >>> ok = FeatureVector(Identity("node-1", "c1", "nginx"), 1.7e9, 5.0, {"read": 10})
    >>> late = FeatureVector(Identity("node-1", "c2", "nginx"), 1.7e9, 0.0, {"read": 10})
    >>> mask, errors = validate_block(VectorBlock.from_vectors([ok, late]))
    >>> mask.tolist(), [(e.index, e.reason) for e in errors]
    ([True, False], [(1, 'BAD_WINDOW')])
    """
    n = len(block)
    if n == 0:
        return np.ones(0, dtype=bool), []
    bad_ident = _bad_identities(block.identities)
    bad = np.zeros(n, dtype=bool) if bad_ident is None else bad_ident[block.ident]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        limit = MAX_RATE_PER_SECOND * block.window_seconds
        bad |= _bad_windows(block, limit)
        if len(block.sc_name):
            _mark_bad_syscalls(block, limit, bad)
        if len(block.ng_bucket):
            _mark_bad_ngrams(block, limit, bad)
    _mark_bad_lists(block, bad)
    if not bad.any():
        return ~bad, []
    errors = [_error(block.vector(i), int(block.index[i])) for i in np.flatnonzero(bad).tolist()]
    if bad_ident is not None and not all(isinstance(x, Identity) for x in block.identities):
        block.identities = [x if isinstance(x, Identity) else _PLACEHOLDER for x in block.identities]
        block.shared.clear()  # (values derived from the old table)
    return ~bad, errors


# -- the block's checks, as masks ---------------------------------------------------------------------


def _bad_identities(identities: Sequence[Identity]) -> np.ndarray | None:
    """Which entries of an identity table are bad (not an :class:`Identity` counts as bad), or ``None``
    when all are good.  A table that passed before costs a lookup (:class:`TableMemo`), one of identities
    that passed one set lookup each."""
    if _GOOD_TABLES.get(identities):
        return None
    try:
        good = all(map(_GOOD_IDENTITIES.__contains__, identities))
    except TypeError:  # something unhashable that is no Identity: looked at below
        good = False
    bad = None if good else np.fromiter((not _identity_ok(x) for x in identities), dtype=bool, count=len(identities))
    if bad is None or not bad.any():
        _GOOD_TABLES.put(identities, True)
        return None
    return bad


def _identity_ok(x: object) -> bool:
    if not isinstance(x, Identity):
        return False
    if _identity_error(x) is not None:
        return False
    if len(_GOOD_IDENTITIES) >= _MAX_GOOD_IDENTITIES:
        _GOOD_IDENTITIES.clear()
        _GOOD_TABLES.clear()
    _GOOD_IDENTITIES.add(x)
    return True


def _bad_windows(block: VectorBlock, limit: np.ndarray) -> np.ndarray:
    """Windows with an implausible start or length, an infinite age, or a counter that is not a finite
    number in [0, the window's limit] (NaN compares false: bad)."""
    ws, sec, c = block.window_start, block.window_seconds, block.counters
    ok = (ws >= MIN_TIME) & (ws <= MAX_TIME) & (sec > 0) & (sec <= MAX_WINDOW_SECONDS) & np.isfinite(block.age)
    ok &= (np.isfinite(c) & (c >= 0) & (c <= limit[:, None])).all(axis=1)
    return ~ok


def _mark_bad_syscalls(block: VectorBlock, limit: np.ndarray, bad: np.ndarray) -> None:
    """Windows with too many syscall entries, a bad name, or a count not in [0, the window's limit]."""
    bad |= np.diff(block.sc_ptr) > MAX_SYSCALL_NAMES
    bad_name = _bad_syscall_names(block.syscall_names)
    cnt = block.sc_count
    # the usual batch: good names, and every count in [0, the lowest window's limit] (NaN fails)
    if bad_name is None and cnt.min() >= 0 and cnt.max() <= limit.min():
        return
    entry_rows = row_ids(block.sc_ptr)
    bad_entry = ~(np.isfinite(cnt) & (cnt >= 0) & (cnt <= limit[entry_rows]))
    if bad_name is not None:
        bad_entry |= bad_name[block.sc_name]
    bad[entry_rows[bad_entry]] = True


def _bad_syscall_names(names: Sequence[str]) -> np.ndarray | None:
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


def _mark_bad_ngrams(block: VectorBlock, limit: np.ndarray, bad: np.ndarray) -> None:
    """Windows with an n-gram bucket out of range or a count not in [0, the window's limit]."""
    b, cnt, ptr = block.ng_bucket, block.ng_count, block.ng_ptr
    if b.min() >= 0 and b.max() < NUM_BUCKETS and cnt.min() >= 0:  # (NaN fails the last test)
        # entries are fine: only a window's largest count can be over its limit (or infinite)
        if not cnt.max() <= limit.min():
            full = np.diff(ptr) > 0
            bad[full] |= np.maximum.reduceat(cnt, ptr[:-1][full]) > limit[full]
        return
    entry_rows = row_ids(ptr)
    bad_entry = (b < 0) | (b >= NUM_BUCKETS) | ~(np.isfinite(cnt) & (cnt >= 0) & (cnt <= limit[entry_rows]))
    bad[entry_rows[bad_entry]] = True


def _mark_bad_lists(block: VectorBlock, bad: np.ndarray) -> None:
    """Windows with too many executables, sensitive paths or endpoints, or a bad one among them."""
    for ptr, items in ((block.exe_ptr, block.executables), (block.path_ptr, block.sensitive_paths)):
        if items:
            bad |= np.diff(ptr) > MAX_EXECUTABLES
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


# -- what is wrong with one window ---------------------------------------------------------------------


def _error(v: FeatureVector, index: int) -> ValidationError:
    """The error of a window found bad, naming the first thing wrong with it (``index``: its position in
    its batch)."""
    try:
        err = _vector_error(v)
        if err is None:  # the block's entries for one item add up to a valid total
            err = ValidationError("NEGATIVE", "window has a negative count (its entries for one item add up "
                                  "to a valid total, but an entry is negative or not finite)")
    except Exception:  # a value validation did not foresee: the window is refused, the rest goes on
        err = ValidationError("UNSPECIFIED", "vector could not be validated")
    err.index = index
    return err


def _vector_error(v: FeatureVector) -> ValidationError | None:
    """The first thing wrong with ``v``, checked field by field in a fixed order; ``None`` if nothing."""
    return (_identity_error(v.identity) or _window_error(v) or _syscalls_error(v) or _ngrams_error(v)
            or _counters_error(v) or _rate_error(v) or _lists_error(v))


def _identity_error(ident: Identity) -> ValidationError | None:
    if ident in _GOOD_IDENTITIES:
        return None
    if not ident.node:
        return ValidationError("BAD_IDENTITY", "identity.node is empty")
    if len(ident.node) > MAX_NAME_LENGTH:
        return ValidationError("BAD_IDENTITY", f"identity.node is longer than {MAX_NAME_LENGTH} characters")
    repo = ident.image_repository
    if not repo:
        return ValidationError("BAD_IDENTITY", "identity.image_repository is empty")
    if len(repo) > MAX_NAME_LENGTH or not _REPOSITORY.match(repo):
        return ValidationError("BAD_IDENTITY", f"identity.image_repository is not an image name: {repo[:80]!r}")
    if ident.image_tag and not _TAG.match(ident.image_tag):
        return ValidationError("BAD_IDENTITY", f"identity.image_tag is not a tag: {ident.image_tag[:80]!r}")
    for field in ("container_id", "container_name", "image_digest", "pod", "namespace"):
        if len(getattr(ident, field)) > MAX_NAME_LENGTH:
            return ValidationError("BAD_IDENTITY", f"identity.{field} is longer than {MAX_NAME_LENGTH} characters")
    return None


def _window_error(v: FeatureVector) -> ValidationError | None:
    for name, value in (("window_start", v.window_start), ("window_seconds", v.window_seconds)):
        if not math.isfinite(value):
            return ValidationError("NOT_FINITE", f"{name} is {value}")
    if not MIN_TIME <= v.window_start <= MAX_TIME:
        return ValidationError("BAD_WINDOW", f"window_start {v.window_start} is not a plausible epoch time")
    if not 0 < v.window_seconds <= MAX_WINDOW_SECONDS:
        return ValidationError("BAD_WINDOW", f"window_seconds {v.window_seconds} is not in (0, {MAX_WINDOW_SECONDS}]")
    if not math.isfinite(v.seconds_since_start):
        return ValidationError("NOT_FINITE", f"seconds_since_start is {v.seconds_since_start}")
    return None


def _syscalls_error(v: FeatureVector) -> ValidationError | None:
    if len(v.syscalls) > MAX_SYSCALL_NAMES:
        return ValidationError("TOO_LARGE", f"{len(v.syscalls)} syscall names (max {MAX_SYSCALL_NAMES})")
    for name, count in v.syscalls.items():
        if not isinstance(name, str) or not name or len(name) > 64:
            return ValidationError("BAD_REFERENCE", f"syscall name {str(name)[:80]!r} is empty or too long")
        err = _count_error(f"syscall {name}", count)
        if err is not None:
            return err
    return None


def _ngrams_error(v: FeatureVector) -> ValidationError | None:
    for bucket, count in v.ngrams.items():
        if not 0 <= bucket < NUM_BUCKETS:
            return ValidationError("BAD_REFERENCE", f"n-gram bucket {bucket} outside [0, {NUM_BUCKETS})")
        err = _count_error(f"n-gram bucket {bucket}", count)
        if err is not None:
            return err
    return None


def _counters_error(v: FeatureVector) -> ValidationError | None:
    for attr in COUNTERS:
        err = _count_error(attr, getattr(v, attr))
        if err is not None:
            return err
    return None


def _count_error(name: str, value: float) -> ValidationError | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return ValidationError("MISSING_FIELD", f"{name} is not a number: {value!r}")
    if not math.isfinite(value):
        return ValidationError("NOT_FINITE", f"{name} is {value}")
    if value < 0:
        return ValidationError("NEGATIVE", f"{name} is negative: {value}")
    return None


def _rate_error(v: FeatureVector) -> ValidationError | None:
    limit = MAX_RATE_PER_SECOND * v.window_seconds
    name, value = max(
        chain(((attr, getattr(v, attr)) for attr in COUNTERS), (("syscall " + k, c) for k, c in v.syscalls.items()),
              ((f"n-gram bucket {k}", c) for k, c in v.ngrams.items())),
        key=lambda kv: kv[1],
    )
    if value <= limit:
        return None
    return ValidationError("IMPLAUSIBLE", f"{name} is {value:g} in a {v.window_seconds:g} s window (more than "
                           f"{MAX_RATE_PER_SECOND:g} per second)")


def _lists_error(v: FeatureVector) -> ValidationError | None:
    for attr, items, limit in (
        ("executables", v.executables, MAX_EXECUTABLES),
        ("endpoints", v.endpoints, MAX_ENDPOINTS),
        ("sensitive_paths", v.sensitive_paths, MAX_EXECUTABLES),
    ):
        if len(items) > limit:
            return ValidationError("TOO_LARGE", f"{len(items)} {attr} (max {limit})")
    for path in (*v.executables, *v.sensitive_paths):
        if not path or len(path) > MAX_PATH_LENGTH:
            return ValidationError("BAD_REFERENCE", "an executable or path is empty or too long")
    for ep in v.endpoints:
        if not 0 <= ep.port <= 65535:
            return ValidationError("BAD_REFERENCE", f"endpoint port {ep.port} out of range")
        if not ep.address or len(ep.address) > 64:
            return ValidationError("BAD_REFERENCE", "endpoint address is empty or too long")
    return None

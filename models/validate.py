"""Domain-level checks of windows before they may touch a baseline.

:func:`validate_block` checks every window of a :class:`~baseliner.models.block.VectorBlock` at once;
:func:`validate` is a block of one window.  Every failure is a :class:`~baseliner.models.errors.ValidationError`
with a reason code and a message that says what was wrong, so the service can reject that one window,
count it, and go on.  Each rule is written once, as a mask over the block (:func:`_findings`, in the order
a window's first fault is named); only the windows it finds bad are described in words.

What passed before is remembered by content, never by object: identities (frozen, hashable), identity
tables (:class:`~baseliner.models.block.TableMemo`) and syscall names, bounded.  A table changed after it
was checked is checked again, entry by entry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

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
    except Exception:  # a value that is no number at all (no block can hold it): say which
        raise _not_a_number(v) from None
    _, errors = validate_block(block)
    if errors:
        raise errors[0]


def validate_block(block: VectorBlock) -> tuple[np.ndarray, list[ValidationError]]:
    """Check every window of a block at once: ``(ok, errors)``.

    ``ok`` is a boolean mask of the windows that are safe to score and learn; ``errors`` has one
    :class:`ValidationError` per other window, in row order (its ``index`` is the window's position in its
    batch), naming the window's first fault in the order of :func:`_findings`.  Entries of the block's
    identity table that are no :class:`Identity` at all are replaced in the block (not in the caller's
    table) once their windows are refused.

    >>> from baseliner.models.vector import FeatureVector, Identity
    >>> ok = FeatureVector(Identity("node-1", "c1", "nginx"), 1.7e9, 5.0, {"read": 10})
    >>> late = FeatureVector(Identity("node-1", "c2", "nginx"), 1.7e9, 0.0, {"read": 10})
    >>> mask, errors = validate_block(VectorBlock.from_vectors([ok, late]))
    >>> mask.tolist(), [(e.index, e.reason) for e in errors]
    ([True, False], [(1, 'BAD_WINDOW')])
    """
    n = len(block)
    bad = np.zeros(n, dtype=bool)
    found: dict[int, ValidationError] = {}
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for mask, describe in _findings(block):
            if not mask.any():
                continue
            new = np.flatnonzero(mask & ~bad)
            for i in new.tolist():
                found[i] = describe(i)
            bad[new] = True
    if not found:
        return ~bad, []
    errors = []
    for i in sorted(found):
        err = found[i]
        err.index = int(block.index[i])
        errors.append(err)
    if not all(isinstance(x, Identity) for x in block.identities):
        block.identities = [x if isinstance(x, Identity) else _PLACEHOLDER for x in block.identities]
        block.shared.clear()  # (values derived from the old table)
    return ~bad, errors


# -- the rules, each once: a mask of the windows it refuses and the words for one of them ------------------

Describe = Callable[[int], ValidationError]
Finding = tuple[np.ndarray, Describe]


def _findings(block: VectorBlock) -> Iterator[Finding]:
    """Every rule's bad windows, in the order a window's first fault is named: identity, window, syscall
    entries, n-gram entries, counters, rate, lists.  Groups whose whole-batch shortcut shows them clean
    (the usual batch) yield nothing."""
    limit = MAX_RATE_PER_SECOND * block.window_seconds
    yield from _identity_findings(block)
    yield from _window_findings(block)
    yield from _syscall_findings(block)
    yield from _ngram_findings(block)
    yield from _counter_findings(block)
    yield _rate_finding(block, limit)
    yield from _list_findings(block)


def _identity_findings(block: VectorBlock) -> Iterator[Finding]:
    bad_ident = _bad_identities(block.identities)
    if bad_ident is None:
        return

    def describe(i: int) -> ValidationError:
        ident = block.identities[int(block.ident[i])]
        if not isinstance(ident, Identity):
            return ValidationError("UNSPECIFIED", "vector could not be validated: its identity is no Identity")
        return _identity_error(ident) or ValidationError("BAD_IDENTITY", "identity is not valid")

    yield bad_ident[block.ident], describe


def _window_findings(block: VectorBlock) -> Iterator[Finding]:
    ws, sec, age = block.window_start, block.window_seconds, block.age
    if ((ws >= MIN_TIME) & (ws <= MAX_TIME) & (sec > 0) & (sec <= MAX_WINDOW_SECONDS) & np.isfinite(age)).all():
        return  # the usual batch (NaN fails the comparisons)
    yield ~np.isfinite(ws), lambda i: ValidationError("NOT_FINITE", f"window_start is {ws[i]}")
    yield ~np.isfinite(sec), lambda i: ValidationError("NOT_FINITE", f"window_seconds is {sec[i]}")
    yield ~((ws >= MIN_TIME) & (ws <= MAX_TIME)), lambda i: ValidationError(
        "BAD_WINDOW", f"window_start {ws[i]} is not a plausible epoch time")
    yield ~((sec > 0) & (sec <= MAX_WINDOW_SECONDS)), lambda i: ValidationError(
        "BAD_WINDOW", f"window_seconds {sec[i]} is not in (0, {MAX_WINDOW_SECONDS}]")
    yield ~np.isfinite(age), lambda i: ValidationError("NOT_FINITE", f"seconds_since_start is {age[i]}")


def _all_fine(cnt: np.ndarray) -> bool:
    """Every count finite and not negative (two reductions; NaN fails the first)."""
    return bool(cnt.min() >= 0 and np.isfinite(cnt.max()))


def _count_faults(cnt: np.ndarray) -> np.ndarray:
    """Per count: 0 fine, 1 not finite, 2 negative (the codes of :func:`_count_error`)."""
    return np.where(~np.isfinite(cnt), 1, np.where(cnt < 0, 2, 0)).astype(np.int8)


def _count_error(name: str, value: float, fault: int) -> ValidationError:
    if fault == 1:
        return ValidationError("NOT_FINITE", f"{name} is {value}")
    return ValidationError("NEGATIVE", f"{name} is negative: {value}")


def _entry_finding(ptr: np.ndarray, faults: np.ndarray, describe: Callable[[int, int], ValidationError]) -> Finding:
    """The windows with a faulty entry in a CSR list; a window is described by its first faulty entry
    (``describe(entry, fault)``)."""
    mask = np.zeros(len(ptr) - 1, dtype=bool)
    mask[row_ids(ptr)[faults > 0]] = True

    def first(i: int) -> ValidationError:
        a, b = int(ptr[i]), int(ptr[i + 1])
        j = a + int(np.flatnonzero(faults[a:b])[0])
        return describe(j, int(faults[j]))

    return mask, first


def _syscall_findings(block: VectorBlock) -> Iterator[Finding]:
    sizes = np.diff(block.sc_ptr)
    if len(sizes) and sizes.max() > MAX_SYSCALL_NAMES:
        yield sizes > MAX_SYSCALL_NAMES, lambda i: ValidationError(
            "TOO_LARGE", f"{sizes[i]} syscall names (max {MAX_SYSCALL_NAMES})")
    if not len(block.sc_name):
        return
    bad_name = _bad_syscall_names(block.syscall_names)
    cnt = block.sc_count
    if bad_name is None and _all_fine(cnt):  # the usual batch
        return
    faults = _count_faults(cnt)
    if bad_name is not None:
        faults[bad_name[block.sc_name]] = 3
    names = block.syscall_names

    def describe(j: int, fault: int) -> ValidationError:
        name = names[int(block.sc_name[j])]
        if fault == 3:
            return ValidationError("BAD_REFERENCE", f"syscall name {str(name)[:80]!r} is empty or too long")
        return _count_error(f"syscall {name}", float(cnt[j]), fault)

    yield _entry_finding(block.sc_ptr, faults, describe)


def _ngram_findings(block: VectorBlock) -> Iterator[Finding]:
    b, cnt = block.ng_bucket, block.ng_count
    if not len(b) or (b.min() >= 0 and b.max() < NUM_BUCKETS and _all_fine(cnt)):  # the usual batch
        return
    faults = _count_faults(cnt)
    faults[(b < 0) | (b >= NUM_BUCKETS)] = 3

    def describe(j: int, fault: int) -> ValidationError:
        if fault == 3:
            return ValidationError("BAD_REFERENCE", f"n-gram bucket {int(b[j])} outside [0, {NUM_BUCKETS})")
        return _count_error(f"n-gram bucket {int(b[j])}", float(cnt[j]), fault)

    yield _entry_finding(block.ng_ptr, faults, describe)


def _counter_findings(block: VectorBlock) -> Iterator[Finding]:
    c = block.counters
    if c.size == 0 or _all_fine(c):  # the usual batch
        return
    faults = _count_faults(c)  # (n, counters): a window is named by its first faulty counter

    def describe(i: int) -> ValidationError:
        j = int(np.flatnonzero(faults[i])[0])
        return _count_error(COUNTERS[j], float(c[i, j]), int(faults[i, j]))

    yield np.asarray((faults > 0).any(axis=1)), describe


def _rate_finding(block: VectorBlock, limit: np.ndarray) -> Finding:
    """Windows with any count past ``MAX_RATE_PER_SECOND`` over its window, named by their largest count
    (counters first, then syscalls, then n-grams, on ties)."""
    over = np.asarray((block.counters > limit[:, None]).any(axis=1))
    for ptr, cnt in ((block.sc_ptr, block.sc_count), (block.ng_ptr, block.ng_count)):
        if len(cnt) and not cnt.max() <= limit.min():
            rows = row_ids(ptr)
            over[rows[cnt > limit[rows]]] = True

    def describe(i: int) -> ValidationError:
        v = block.vector(i)
        candidates = [(attr, getattr(v, attr)) for attr in COUNTERS]
        candidates += [("syscall " + k, c) for k, c in v.syscalls.items()]
        candidates += [(f"n-gram bucket {k}", c) for k, c in v.ngrams.items()]
        name, value = max(candidates, key=lambda kv: kv[1])
        return ValidationError("IMPLAUSIBLE", f"{name} is {value:g} in a {v.window_seconds:g} s window (more "
                               f"than {MAX_RATE_PER_SECOND:g} per second)")

    return over, describe


def _list_findings(block: VectorBlock) -> Iterator[Finding]:
    lists = (("executables", block.exe_ptr, MAX_EXECUTABLES), ("endpoints", block.ep_ptr, MAX_ENDPOINTS),
             ("sensitive_paths", block.path_ptr, MAX_EXECUTABLES))
    for attr, ptr, most in lists:
        sizes = np.diff(ptr)
        if len(sizes) and sizes.max() > most:
            yield sizes > most, lambda i, attr=attr, sizes=sizes, most=most: ValidationError(  # type: ignore[misc]
                "TOO_LARGE", f"{sizes[i]} {attr} (max {most})")
    for ptr, items in ((block.exe_ptr, block.executables), (block.path_ptr, block.sensitive_paths)):
        if items:
            faults = np.fromiter((not p or len(p) > MAX_PATH_LENGTH for p in items), dtype=np.int8, count=len(items))
            if faults.any():
                yield _entry_finding(ptr, faults, lambda j, fault: ValidationError(
                    "BAD_REFERENCE", "an executable or path is empty or too long"))
    if len(block.ep_index):
        eps = block.endpoints
        per_endpoint = np.fromiter(
            (2 if not 0 <= ep.port <= 65535 else 1 if not ep.address or len(ep.address) > 64 else 0 for ep in eps),
            dtype=np.int8, count=len(eps))

        def describe(j: int, fault: int) -> ValidationError:
            ep = eps[int(block.ep_index[j])]
            if fault == 2:
                return ValidationError("BAD_REFERENCE", f"endpoint port {ep.port} out of range")
            return ValidationError("BAD_REFERENCE", "endpoint address is empty or too long")

        if per_endpoint.any():
            yield _entry_finding(block.ep_ptr, per_endpoint[block.ep_index], describe)


# -- what passed before -------------------------------------------------------------------------------------


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


def _not_a_number(v: FeatureVector) -> ValidationError:
    """The error of a window no block can hold: a count that is no number at all (an in-process caller's
    mistake; the wire cannot carry one)."""
    counts = [*((attr, getattr(v, attr)) for attr in COUNTERS),
              *(("syscall " + str(k), c) for k, c in v.syscalls.items()),
              *((f"n-gram bucket {k}", c) for k, c in v.ngrams.items())]
    for name, value in counts:
        if not isinstance(value, int | float) or isinstance(value, bool):
            err = ValidationError("MISSING_FIELD", f"{name} is not a number: {value!r}")
            break
    else:
        err = ValidationError("UNSPECIFIED", "vector could not be validated")
    err.index = -1
    return err

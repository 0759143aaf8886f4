"""Which shard owns an image: rendezvous (highest-random-weight) hashing over a named shard list.

Shared by the sensor (``baseliner.sensor.routing`` splits each window's vectors by owner) and the service
(``baseliner.service.shards`` forwards what it does not own, hands baselines over on a resize): both import
this module, which imports nothing of either, so every party computes the same owner from the same list.

* The **routing key** of a window is its image *repository* (:func:`routing_key`): every image key mode of the
  service (``repository:tag``, ``repository@digest``, ``repository``) then puts all the baselines of one
  repository on one shard, a Falco alert (which names the repository) finds the same shard, and an image key
  given to the Admin API gives its repository back (:func:`routing_key_of_image_key`).
* The **owner** of a key is the shard whose name hashes highest together with the key (:func:`owner`):
  ``blake2b(name NUL key)``, 8 bytes.  Adding a shard moves to it only the keys it now wins (about 1/N of
  them); removing one moves only its own keys, each to its runner-up.  Names, not addresses, are hashed: a
  shard that restarts on another address keeps its keys.
* A :class:`ShardMap` is a numbered list (``epoch``): the service's shards agree on one map at a time and
  sensors follow it (``docs/sharding.md``).

Shard lists are written ``NAME=HOST:PORT`` or ``HOST:PORT``, separated by commas, spaces or new lines, with
brace ranges for a StatefulSet's ordinal names (:func:`parse_shard_list`).  A DNS host's first label is the
shard's name (``baseliner-1.baseliner-shards.ns.svc:50051`` is ``baseliner-1``, the pod's name); an IP
address keeps ``HOST:PORT`` as its name.

>>> m = ShardMap(1, parse_shard_list("baseliner-{0..2}.baseliner-shards:50051"))
>>> m.names
('baseliner-0', 'baseliner-1', 'baseliner-2')
>>> m.owner("nginx").name, m.owner("nginx") == m.owner(routing_key_of_image_key("nginx:1.27"))
('baseliner-0', True)
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$")
#: The most entries a shard list may expand to (a typo like ``{0..99999}`` is refused, not resolved).
MAX_SHARDS = 256


class ShardListError(ValueError):
    """A shard list that cannot be read: what is wrong and where."""


@dataclass(frozen=True, slots=True, order=True)
class Shard:
    """One shard: the name its ownership is hashed by, and the gRPC address it is reached at."""

    name: str
    address: str


def weight(name: str, key: str) -> int:
    """The rendezvous weight of ``key`` on the shard called ``name``.

    >>> weight("baseliner-0", "nginx") == weight("baseliner-0", "nginx") != weight("baseliner-1", "nginx")
    True
    """
    digest = hashlib.blake2b(f"{name}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(names: Sequence[str], key: str) -> str:
    """The name among ``names`` that owns ``key`` (the highest weight; ties, which need a 64-bit collision,
    go to the greater name).  ``ValueError`` for an empty list.

    >>> owner(["a", "b", "c"], "nginx"), owner(["a", "b", "c", "d"], "nginx")
    ('a', 'a')
    """
    if not names:
        raise ValueError("no shards to own anything")
    return max(names, key=lambda n: (weight(n, key), n))


def routing_key(repository: str) -> str:
    """The key a window (or an alert) is routed by: its image repository, as it is."""
    return repository


def routing_key_of_image_key(key: str) -> str:
    """The repository of an image key of any mode (``repo:tag``, ``repo@digest``, ``repo``).

    >>> [routing_key_of_image_key(k) for k in ("nginx:1.27", "nginx@sha256:ab", "nginx", "reg:5000/app:1.0",
    ...                                        "reg:5000/app")]
    ['nginx', 'nginx', 'nginx', 'reg:5000/app', 'reg:5000/app']
    """
    if "@" in key:
        return key.partition("@")[0]
    repo, sep, tag = key.rpartition(":")
    if not sep or "/" in tag:
        return key
    return repo


class ShardMap:
    """A numbered shard list, sorted by name; ``owner`` answers from a bounded cache (one hash per shard per
    new key).  Equal when epoch and shards are."""

    __slots__ = ("epoch", "shards", "_cache")

    def __init__(self, epoch: int, shards: Iterable[Shard]) -> None:
        ordered = tuple(sorted(shards))
        names = [s.name for s in ordered]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ShardListError(f"shard names must be distinct; repeated: {', '.join(dup)}")
        if epoch < 0:
            raise ShardListError("a shard map's epoch is >= 0")
        self.epoch = epoch
        self.shards = ordered
        self._cache: dict[str, Shard] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ShardMap) and (self.epoch, self.shards) == (other.epoch, other.shards)

    def __hash__(self) -> int:
        return hash((self.epoch, self.shards))

    def __repr__(self) -> str:
        return f"ShardMap(epoch={self.epoch}, shards={', '.join(s.name for s in self.shards)})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.shards)

    def __len__(self) -> int:
        return len(self.shards)

    def __contains__(self, name: object) -> bool:
        return any(s.name == name for s in self.shards)

    def get(self, name: str) -> Shard | None:
        return next((s for s in self.shards if s.name == name), None)

    def owner(self, key: str) -> Shard:
        """The shard that owns routing key ``key`` (``ValueError`` for an empty map)."""
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if len(self._cache) >= 65536:  # bounded: a flood of repository names costs hashes, not memory
            self._cache.clear()
        name = owner(self.names, key)
        hit = self._cache[key] = next(s for s in self.shards if s.name == name)
        return hit

    def same_list(self, other: ShardMap | Sequence[Shard]) -> bool:
        """Whether ``other`` lists the same shards (names and addresses), whatever its epoch."""
        theirs = other.shards if isinstance(other, ShardMap) else tuple(sorted(other))
        return self.shards == theirs

    def to_dict(self) -> dict[str, object]:
        return {"epoch": self.epoch, "shards": [[s.name, s.address] for s in self.shards]}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> ShardMap:
        """The inverse of :meth:`to_dict`; ``ShardListError`` for anything else."""
        try:
            epoch = int(d["epoch"])  # type: ignore[call-overload]
            shards = [Shard(str(n), str(a)) for n, a in d["shards"]]  # type: ignore[attr-defined]
        except (KeyError, TypeError, ValueError):
            raise ShardListError("not a shard map (epoch and [[name, address], ...])") from None
        return cls(epoch, shards)


def _expand(entry: str) -> list[str]:
    """Brace ranges ``{A..B}`` expanded (the first range varies slowest)."""
    m = _RANGE.search(entry)
    if m is None:
        return [entry]
    lo, hi = int(m.group(1)), int(m.group(2))
    if hi < lo:
        raise ShardListError(f"{entry!r}: range {{{lo}..{hi}}} goes backwards")
    if hi - lo + 1 > MAX_SHARDS:
        raise ShardListError(f"{entry!r}: range {{{lo}..{hi}}} names more than {MAX_SHARDS} shards")
    out: list[str] = []
    for i in range(lo, hi + 1):
        out += _expand(entry[:m.start()] + str(i) + entry[m.end():])
    return out


def _default_name(address: str) -> str:
    host = address.rpartition(":")[0].strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host.split(".", 1)[0] if host != "localhost" else address
    return address


def parse_entry(entry: str) -> Shard:
    """``NAME=HOST:PORT`` or ``HOST:PORT`` -> :class:`Shard` (``ShardListError`` otherwise).

    >>> parse_entry("a=127.0.0.1:50051"), parse_entry("127.0.0.1:50051").name
    (Shard(name='a', address='127.0.0.1:50051'), '127.0.0.1:50051')
    """
    name, sep, address = entry.partition("=")
    if not sep:
        name, address = "", entry
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ShardListError(f"{entry!r}: a shard is NAME=HOST:PORT or HOST:PORT")
    name = name or _default_name(address)
    if not _NAME.match(name):
        raise ShardListError(f"{entry!r}: shard name {name!r} is not a name (letters, digits, . _ : -)")
    return Shard(name, address)


def parse_shard_list(text: str) -> list[Shard]:
    """Every shard of a list (see the module docstring); ``ShardListError`` names the first bad entry.

    Lines starting with ``#`` are comments.

    >>> [s.name for s in parse_shard_list("s-{0..1}.svc:1 # two shards\\n# more later")]
    ['s-0', 's-1']
    """
    entries: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        entries += [e for e in re.split(r"[\s,]+", line) if e]
    shards = [parse_entry(e) for entry in entries for e in _expand(entry)]
    if len(shards) > MAX_SHARDS:
        raise ShardListError(f"the list names {len(shards)} shards; at most {MAX_SHARDS}")
    ShardMap(0, shards)  # distinct names
    return shards


def read_shard_list(spec: str) -> list[Shard]:
    """The shards of ``spec``: a list, or ``@PATH`` of a file holding one (read on every call, so a mounted
    ConfigMap's changes are seen); ``ShardListError`` names what is wrong."""
    text = spec
    if spec.startswith("@"):
        try:
            text = Path(spec[1:]).read_text(encoding="utf-8")
        except OSError as e:
            raise ShardListError(f"{spec!r}: {e.strerror}") from None
    return parse_shard_list(text)

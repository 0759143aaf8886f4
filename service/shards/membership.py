"""This shard's place in the shard map: its name, the map it follows, where the list comes from, what is saved.

The shards follow one numbered map at a time (:class:`baseliner.models.shards.ShardMap`).  Only the first shard
of the map (by name: a StatefulSet's ordinal 0) reads the list's source (``shards.list``, literal or ``@FILE``:
:func:`~baseliner.models.shards.read_shard_list`) and proposes a new map when the list changes; every shard adopts
a proposal with a higher epoch (:meth:`Membership.adopt`) and keeps the map before it (``previous``) until it holds
every image it owns under the new one (``docs/sharding.md``).  A service without a list is the one shard of a map
of its own.

With a state directory the maps, and the routing keys this shard gave away (``released``: what its checkpoint
and log may still hold, and the answer to a repeated Commit), are kept in ``<state>/shards.state`` (the state
files' form: integrity-checked, written atomically).
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baseliner.models.errors import StateError
from baseliner.models.integrity import Keyring, atomic_write
from baseliner.models.shards import Shard, ShardListError, ShardMap
from baseliner.service.config import ShardsConfig
from baseliner.service.store import decode_file, encode_file

log = logging.getLogger(__name__)

#: How long a released routing key is remembered (a puller that crashed after its Commit asks again).
RELEASED_SECONDS = 24 * 3600.0
EMPTY = ShardMap(0, ())


@dataclass
class Membership:
    """This shard's name and the maps it follows (see the module docstring)."""

    name: str
    single: bool  # no list configured: this service is the one shard of its own map
    map: ShardMap = EMPTY
    previous: ShardMap | None = None  # the map before ``map`` while images still move to their new owners
    before: ShardMap | None = None  # the map before ``map``, kept after this shard settled (proposals carry it)
    released: dict[str, tuple[str, str, float]] = field(default_factory=dict)  # key -> (to, token, when)
    path: Path | None = None
    key: Keyring | None = None  # state.key_file (required with a state directory)

    @classmethod
    def from_config(cls, cfg: ShardsConfig, state_dir: str, keys: Keyring | None) -> Membership:
        name = cfg.name or socket.gethostname()
        m = cls(name, single=not cfg.list, path=Path(state_dir) / "shards.state" if state_dir else None,
                key=keys)
        if m.single:
            m.map = ShardMap(1, [Shard(name, "")])  # (the address: whatever the sensor reached)
            return m
        m.load()
        return m

    # -- the map --------------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self.map.epoch

    @property
    def member(self) -> bool:
        return self.name in self.map

    @property
    def coordinator(self) -> str:
        """The shard that proposes the next map: the first of this one (or of the list, before any map)."""
        return self.map.names[0] if len(self.map) else ""

    def owner(self, key: str) -> str:
        """The owner of routing key ``key`` under the map followed ("" before any map)."""
        return self.map.owner(key).name if len(self.map) else ""

    def previous_owner(self, key: str) -> str:
        """Its owner under the previous map ("" when there is none)."""
        return self.previous.owner(key).name if self.previous is not None and len(self.previous) else ""

    def adopt(self, new: ShardMap, before: ShardMap | None = None) -> bool:
        """Follow ``new`` when its epoch is higher (True); the same map again changes nothing (False).
        ``before`` is the map it replaces: a shard that missed it (it was down, or is new) pulls from that map's
        owners.  ``StateError`` for another map under an epoch already followed (two coordinators)."""
        if new.epoch < self.map.epoch or (new.epoch == self.map.epoch and new == self.map):
            return False
        if new.epoch == self.map.epoch:
            raise StateError(f"shard map epoch {new.epoch} proposed with another list than the one followed "
                             f"({', '.join(new.names)} vs {', '.join(self.map.names)})")
        if before is not None and len(before) and before.epoch > self.map.epoch:
            self.previous = before  # (this shard's own map is older: the images are where ``before`` put them)
        elif self.previous is None:
            self.previous = self.map if len(self.map) else None
        # else: this shard had not settled on the map it follows: its images still move as that one said
        self.before = self.map if len(self.map) else before
        self.map = new
        self.save()
        log.info("shard %s follows map epoch %d: %s%s", self.name, new.epoch, ", ".join(new.names),
                 "" if self.member else " (not a member: its images go to their owners)")
        return True

    def settle(self) -> None:
        """Every image of the previous map has moved here or away: forget it."""
        if self.previous is not None:
            self.previous = None
            self.save()
            log.info("shard %s settled on map epoch %d", self.name, self.map.epoch)

    def release(self, key: str, to: str, token: str) -> None:
        """Remember (durably, before the answer) that ``key`` went to ``to`` with ``token``."""
        now = time.time()
        self.released = {k: v for k, v in self.released.items() if now - v[2] < RELEASED_SECONDS}
        self.released[key] = (to, token, now)
        self.save()

    # -- on disk --------------------------------------------------------------------------------------
    def save(self) -> None:
        if self.path is None or self.single:
            return
        meta: dict[str, Any] = {
            "name": self.name, "map": self.map.to_dict(),
            "previous": self.previous.to_dict() if self.previous is not None else None,
            "before": self.before.to_dict() if self.before is not None else None,
            "released": {k: list(v) for k, v in self.released.items()},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        assert self.key is not None, "state.dir needs state.key_file"
        atomic_write(self.path, encode_file("shards", "shards", meta, {}, self.key))

    def load(self) -> None:
        """The maps saved by this shard before (``StateError`` for a file that does not verify or is another
        shard's)."""
        if self.path is None or not self.path.exists():
            return
        assert self.key is not None, "state.dir needs state.key_file"
        header, meta, _ = decode_file(self.path.read_bytes(), self.key, str(self.path))
        if header.get("kind") != "shards":
            raise StateError(f"{self.path}: not a shards state file")
        if meta.get("name") != self.name:
            raise StateError(f"{self.path}: written by shard {meta.get('name')!r}, this is {self.name!r}: a state "
                             "directory belongs to one shard (set shards.name, or give each shard its own volume)")
        try:
            self.map = ShardMap.from_dict(meta["map"])
            self.previous = ShardMap.from_dict(meta["previous"]) if meta.get("previous") else None
            self.before = ShardMap.from_dict(meta["before"]) if meta.get("before") else None
            self.released = {str(k): (str(v[0]), str(v[1]), float(v[2])) for k, v in meta["released"].items()}
        except (KeyError, TypeError, ValueError, IndexError, ShardListError) as e:
            raise StateError(f"{self.path}: shard maps are inconsistent ({e})") from None
        log.info("shard %s: map epoch %d from %s%s", self.name, self.map.epoch, self.path,
                 " (images still moving from the map before)" if self.previous is not None else "")

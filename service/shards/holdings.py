"""Where a routing key is now, as this shard knows it: here, fenced (moving away or arriving), or elsewhere.

:meth:`Holdings.where` is asked for every routing key of every batch that is not plainly this shard's, for every
Admin call about an image and every Falco alert.  The answer follows from what this shard holds, the map it
follows and the one before it (``membership.py``):

1. a **fenced** key waits: it is being pulled away (its state was sent; nothing may change it until the puller's
   Commit or the fence's end), or it is arriving here (pulled, not yet written down);
2. a key **held** here (one of its image keys has a baseline here) is applied here, whatever the map says: its
   owner pulls it when the map has moved it;
3. a key this shard does not own goes to its owner;
4. a key this shard owns and does not hold: new here when the map before gave it to this shard too, or when its
   previous owner has said it does not hold it (it answered ``ListHeld`` or a forward under this epoch: from then
   on it creates no baseline for it); until then it goes to the previous owner, which holds it or will say so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from baseliner.models.shards import routing_key_of_image_key
from baseliner.service.shards.membership import Membership


class Route(Enum):
    LOCAL = "local"
    WAIT = "wait"
    FORWARD = "forward"


@dataclass(frozen=True, slots=True)
class Decision:
    route: Route
    target: str = ""  # FORWARD: the shard to send to
    fence: Fence | None = None  # WAIT: what to wait for


@dataclass(eq=False)
class Fence:
    """A routing key no window, admin change or alert may touch until :meth:`lift`."""

    key: str
    why: str  # "out" (being pulled away by ``peer``) or "in" (arriving from ``peer``)
    peer: str
    token: str = ""
    expires: float = float("inf")  # monotonic time
    lifted: asyncio.Event = field(default_factory=asyncio.Event)

    def lift(self) -> None:
        self.lifted.set()

    async def wait(self, timeout: float) -> bool:
        """True when lifted within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self.lifted.wait(), timeout)
        except TimeoutError:
            return False
        return True


class Holdings:
    """What this shard holds (by routing key) and where it sends the rest (see the module docstring)."""

    def __init__(self, membership: Membership, baselines: Callable[[], Mapping[str, Any]]) -> None:
        self.membership = membership
        self._baselines = baselines  # the pipeline's baselines (a dict, or the spilling mapping)
        self.fences: dict[str, Fence] = {}
        self.confirmed: set[str] = set()  # previous owners that said (under this epoch) what they hold for us
        self.absent: set[str] = set()  # keys whose previous owner said, under this epoch, it does not hold them
        self.to_pull: dict[str, str] = {}  # keys held elsewhere that this shard owns -> where they are
        self._index: dict[str, set[str]] = {}  # routing key -> its image keys held here
        self._indexed = -1  # len(baselines) when the index was built

    # -- what is held ---------------------------------------------------------------------------------
    def _refresh(self) -> dict[str, set[str]]:
        """The index of held keys, rebuilt when the number of baselines changed (a new image, an import); a
        removal rebuilds it at once (:meth:`forget_index`)."""
        b = self._baselines()
        if len(b) != self._indexed:
            index: dict[str, set[str]] = {}
            for k in list(b):
                index.setdefault(routing_key_of_image_key(k), set()).add(k)
            self._index, self._indexed = index, len(b)
        return self._index

    def images_of(self, key: str) -> list[str]:
        """The image keys of routing key ``key`` held here."""
        return sorted(self._refresh().get(key, ()))

    def held(self, key: str) -> bool:
        return key in self._index or key in self._refresh()

    def held_keys(self) -> set[str]:
        return set(self._refresh())

    def forget_index(self) -> None:
        """Baselines were removed (or added) by a handover: rebuild the index on the next question."""
        self._indexed = -1
        self._index = {}

    # -- decisions ------------------------------------------------------------------------------------
    def where(self, key: str) -> Decision:
        m = self.membership
        fence = self.fences.get(key)
        if fence is not None:
            return Decision(Route.WAIT, fence=fence)
        if m.single or key in self._index:  # (the index may miss a new image: never a removed one)
            return Decision(Route.LOCAL)
        owner = m.owner(key)
        if not owner:
            return Decision(Route.WAIT)  # no map yet
        prev = m.previous_owner(key)
        if owner == m.name and (not prev or prev == m.name):
            return Decision(Route.LOCAL)  # here, or new here
        if self.held(key):
            return Decision(Route.LOCAL)
        if owner != m.name:
            return Decision(Route.FORWARD, owner)
        holder = self.to_pull.get(key)
        if holder is not None:
            return Decision(Route.FORWARD, holder)
        if prev in self.confirmed or key in self.absent:
            return Decision(Route.LOCAL)
        return Decision(Route.FORWARD, prev)

    def local(self, keys: Iterable[str]) -> bool:
        """Whether every key of ``keys`` is applied here now (the common case: one look per key)."""
        m = self.membership
        if m.single:
            return True
        return all(self.where(k).route is Route.LOCAL for k in keys)

    # -- fences ---------------------------------------------------------------------------------------
    def fence(self, key: str, why: str, peer: str, token: str = "", seconds: float = float("inf")) -> Fence:
        f = Fence(key, why, peer, token, time.monotonic() + seconds)
        old = self.fences.get(key)
        if old is not None:
            old.lift()
        self.fences[key] = f
        return f

    def lift(self, key: str) -> None:
        f = self.fences.pop(key, None)
        if f is not None:
            f.lift()

    def expire(self) -> list[Fence]:
        """Lift fences past their time (a puller that never committed); returns them."""
        now = time.monotonic()
        gone = [f for f in self.fences.values() if f.expires <= now]
        for f in gone:
            self.lift(f.key)
        return gone

    def new_epoch(self) -> None:
        """A new map: what previous owners said holds for the epoch it was said under only."""
        self.confirmed.clear()
        self.absent.clear()
        self.to_pull.clear()

"""A bounded mapping that forgets the least recently used entry first.

>>> c = BoundedCache[str, int](2)
>>> c.put("a", 1); c.put("b", 2); c.get("a"); c.put("c", 3)
1
>>> sorted(c.keys()), c.evicted
(['a', 'c'], 1)
>>> c.pop("a"), len(c)
(1, 1)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """At most ``capacity`` entries; :meth:`get` and :meth:`put` make an entry the most recently used."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a cache needs a capacity of at least 1, got {capacity}")
        self.capacity = capacity
        self._d: OrderedDict[K, V] = OrderedDict()
        self.evicted = 0

    def get(self, key: K, default: V | None = None) -> V | None:
        if key in self._d:
            self._d.move_to_end(key)
            return self._d[key]
        return default

    def put(self, key: K, value: V) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.capacity:
            self._d.popitem(last=False)
            self.evicted += 1

    def pop(self, key: K, default: V | None = None) -> V | None:
        return self._d.pop(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._d

    def __len__(self) -> int:
        return len(self._d)

    def keys(self) -> Iterator[K]:
        return iter(list(self._d))

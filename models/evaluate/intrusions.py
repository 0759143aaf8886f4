"""Synthetic intrusions made from normal traces only, for choosing settings without attack data.

A held-out normal trace gets a foreign segment (a share of its length) spliced in at a random point, of
one of six kinds.  Three change the *order* of calls:

* ``donor``: a stretch of another held-out trace (another program's code running inside this one);
* ``markov``: calls drawn from the order-1 Markov chain of the learning traces, starting from the call
  before the splice point (every adjacent pair is familiar; longer contexts mostly are not);
* ``unigram``: calls drawn independently from the learning traces' call frequencies.

Three change *how much* of each call a window holds, as real intrusions do beyond foreign sequences:

* ``loop``: a stretch of 2-12 consecutive calls of a learning trace, repeated until the segment is full
  (brute force, scanning, a shellcode or exfiltration loop: familiar code run many times over);
* ``burst``: one call, drawn from the learning traces' call frequencies, repeated for the whole segment
  (a flood of one call: a fork bomb, a read/write or send flood, a spin on a failing call);
* ``mix``: calls drawn independently from *one* learning trace's own call frequencies (another
  program's syscall mix inside this one, its order lost).

Everything comes from the learning traces and the held-out normal ones, so a cross-validation that uses
these intrusions never reads attack data (``Attack_Data_Master``) or test traces.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

Calls = tuple[str, ...]
KINDS = ("donor", "markov", "unigram", "loop", "burst", "mix")
LOOP_PERIODS = (2, 12)  # shortest and longest repeated stretch of ``loop``


@dataclass(frozen=True)
class Spliced:
    calls: Calls
    kind: str
    start: int  # position of the first foreign call
    end: int  # position after the last foreign call


class Intruder:
    """Makes the synthetic intrusions from the learning traces' statistics (seeded by ``rng``).

    >>> rng = random.Random(0)
    >>> it = Intruder([("open", "read", "close")] * 5, rng)
    >>> s = it.splice(("open", "read", "close") * 10, "markov", donor=())
    >>> len(s.calls) - 30 == s.end - s.start == 10, s.calls[s.start:s.end] != ()
    (True, True)
    >>> b = it.splice(("open", "read", "close") * 10, "burst", donor=())
    >>> len(set(b.calls[b.start:b.end]))
    1
    >>> lp = it.splice(("open", "read", "close") * 10, "loop", donor=())
    >>> seg = lp.calls[lp.start:lp.end]
    >>> any(seg[p:] == seg[:-p] for p in (2, 3))  # repeats a stretch of 2 or 3 calls
    True
    """

    def __init__(self, learn: Sequence[Sequence[str]], rng: random.Random) -> None:
        self.rng = rng
        uni = Counter(c for t in learn for c in t)
        if not uni:
            raise ValueError("synthetic intrusions need learning traces with calls")
        self.unigram = (list(uni), [float(v) for v in uni.values()])
        pairs: dict[str, Counter[str]] = defaultdict(Counter)
        for t in learn:
            for a, b in zip(t, t[1:], strict=False):
                pairs[a][b] += 1
        self.next = {a: (list(c), [float(v) for v in c.values()]) for a, c in pairs.items()}
        self.learn = [tuple(t) for t in learn if len(t) >= LOOP_PERIODS[0]]

    def segment(self, kind: str, n: int, before: str | None, donor: Sequence[str]) -> list[str]:
        rng = self.rng
        if kind == "donor" and len(donor) > n:
            s = rng.randrange(0, len(donor) - n)
            return list(donor[s : s + n])
        if kind == "markov":
            out: list[str] = []
            prev = before
            for _ in range(n):
                options = self.next.get(prev) if prev is not None else None
                if not options:
                    prev = rng.choices(self.unigram[0], weights=self.unigram[1])[0]
                else:
                    prev = rng.choices(options[0], weights=options[1])[0]
                out.append(prev)
            return out
        if kind == "loop":
            trace = rng.choice(self.learn)
            period = rng.randint(LOOP_PERIODS[0], min(LOOP_PERIODS[1], len(trace)))
            s = rng.randrange(0, len(trace) - period + 1)
            return [trace[s + i % period] for i in range(n)]
        if kind == "burst":
            return rng.choices(self.unigram[0], weights=self.unigram[1]) * n
        if kind == "mix":
            own = Counter(rng.choice(self.learn))
            return rng.choices(list(own), weights=[float(v) for v in own.values()], k=n)
        return rng.choices(self.unigram[0], weights=self.unigram[1], k=n)

    def splice(self, calls: Sequence[str], kind: str, donor: Sequence[str], share: float = 0.2) -> Spliced:
        """``calls`` with a foreign segment of ``share`` of its length (at least 10 calls) inserted at a
        random point.  A ``donor`` segment falls back to ``unigram`` calls when the donor is too short."""
        if kind not in KINDS:
            raise ValueError(f"unknown intrusion kind {kind!r}; known: {', '.join(KINDS)}")
        n = max(10, int(len(calls) * share))
        at = self.rng.randrange(0, len(calls) + 1)
        seg = self.segment(kind, n, calls[at - 1] if at > 0 else None, donor)
        return Spliced(tuple(calls[:at]) + tuple(seg) + tuple(calls[at:]), kind, at, at + len(seg))

"""Layer 1, immediate history: the last N events of a user, in event-time order."""

from __future__ import annotations

import bisect
import zlib
from collections import Counter
from typing import NamedTuple

from udfs.states import STATES


class RecentEvent(NamedTuple):
    ts: int
    order: int  # ties at one ts are broken by a hash of the event id, so any arrival order agrees
    state: int
    category: str  # "" when the event has none
    amount: float  # price, order total or dwell seconds, by type; 0 when none


def tie_breaker(event_id: str) -> int:
    return zlib.crc32(event_id.encode())


class RecentEvents:
    """Ring buffer of the last `capacity` events by event time. A late event slots into place;
    one older than everything in a full buffer is not among the last N and is not kept."""

    __slots__ = ("capacity", "items")

    def __init__(self, capacity: int, items: list[RecentEvent] | None = None):
        self.capacity = capacity
        self.items = items or []

    def add(self, event: RecentEvent) -> None:
        bisect.insort(self.items, event)
        if len(self.items) > self.capacity:
            del self.items[0]

    def latest(self) -> RecentEvent | None:
        return self.items[-1] if self.items else None

    def bigrams(self, top: int = 3) -> list[tuple[str, int]]:
        """Most frequent consecutive state pairs, as `a>b`, most frequent first (ties by name)."""
        pairs = Counter(
            f"{STATES[a.state]}>{STATES[b.state]}"
            for a, b in zip(self.items, self.items[1:], strict=False)
        )
        return sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:top]

"""Exponential time decay in event time, tolerant of out-of-order events.

Decayed quantities are kept as of a reference time: the largest event time seen. A newer event
first ages everything to its own time; an older one is added with the weight it would have by
now. Either way the result is sum(2^(-(ref - ts_i) / half_life)), whatever the arrival order.
"""

from __future__ import annotations


def decay(dt_ms: float, half_life_ms: float) -> float:
    """Weight left after dt_ms: 1 at 0, 1/2 after one half-life."""
    return 0.5 ** (dt_ms / half_life_ms)


def advance(ref_ts: int | None, ts: int, half_life_ms: float) -> tuple[int, float, float]:
    """For an event at `ts`: (new reference time, factor to age existing sums by, the event's
    own weight)."""
    if ref_ts is None:
        return ts, 1.0, 1.0
    if ts >= ref_ts:
        return ts, decay(ts - ref_ts, half_life_ms), 1.0
    return ref_ts, 1.0, decay(ref_ts - ts, half_life_ms)

"""Online cohort assignment with hysteresis: a user leaves their cohort only when another one is
clearly nearer (by `margin`, relative to the distance to the current centroid) or has stayed
the nearest for `dwell_ms` of event time. A user on a border therefore does not flap."""

from __future__ import annotations

from dataclasses import dataclass

FIRST = "first"  # no cohort yet
MARGIN = "margin"  # the new cohort is nearer by at least the margin
DWELL = "dwell"  # the new cohort stayed the nearest for the dwell time
MODEL = "model"  # a new model version: cohort ids of the old one mean nothing any more


@dataclass
class CohortState:
    cohort: int
    since_ts: int  # event time the user entered the cohort
    model_version: int
    challenger: int | None = None  # the nearest other cohort, while it stays the nearest
    challenger_since: int | None = None
    # What the last assessment saw: the profile's long-term changes (closed sessions and
    # dormancies: the cohort features, its signature, change with nothing else) and the dense
    # (DBSCAN) cohort it found.
    assessed_changes: int | None = None
    dense: int | None = None


def due(
    state: CohortState | None, model_version: int, long_term_changes: int, ts: int, dwell_ms: int
) -> bool:
    """Whether the cohorts must be assessed again: never assessed, a new model version, a new
    signature, or a challenger whose dwell time is up. Otherwise an assessment would find what
    the last one found (the cohort models see the signature only)."""
    return (
        state is None
        or state.model_version != model_version
        or state.assessed_changes != long_term_changes
        or (state.challenger is not None and ts - state.challenger_since >= dwell_ms)
    )


@dataclass(frozen=True)
class CohortMove:
    from_cohort: int | None
    to_cohort: int
    reason: str
    ts: int
    model_version: int
    from_model_version: int | None  # differs from model_version on a `model` move


def decide(
    state: CohortState | None,
    distances: list[float],
    ts: int,
    model_version: int,
    margin: float,
    dwell_ms: int,
) -> tuple[CohortState, CohortMove | None]:
    """The user's cohort after one more observation at event time `ts`, and the move if any."""
    nearest = min(range(len(distances)), key=distances.__getitem__)
    if state is None or state.model_version != model_version:
        reason = FIRST if state is None else MODEL
        start = CohortState(nearest, ts, model_version)
        previous = (state.cohort, state.model_version) if state else (None, None)
        return start, CohortMove(previous[0], nearest, reason, ts, model_version, previous[1])
    current = state.cohort
    if nearest == current:
        return CohortState(current, state.since_ts, model_version), None
    here, there = distances[current], distances[nearest]
    if here > 0 and (here - there) / here >= margin:
        return _move(state, nearest, MARGIN, ts, model_version)
    if state.challenger == nearest:
        if ts - state.challenger_since >= dwell_ms:
            return _move(state, nearest, DWELL, ts, model_version)
        return state, None
    return CohortState(current, state.since_ts, model_version, nearest, ts), None


def _move(state: CohortState, to: int, reason: str, ts: int, version: int):
    return CohortState(to, ts, version), CohortMove(state.cohort, to, reason, ts, version, version)

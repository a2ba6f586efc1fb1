"""Experiment assignment: a user's place in a layer and their variant are salted hashes of
their id, so assignment is deterministic, needs no state and is the same on every task.

A layer's users are split into consecutive slices of [0, 1), one per active experiment of the
layer (in file order, each `traffic` wide); a user belongs to at most one experiment per layer.
Inside an experiment, a second hash (with the experiment's salt) picks the variant by weight."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from conf.policy import Experiment, Policy, Variant

SCALE = float(2**64)


def unit_hash(salt: str, user_id: str) -> float:
    """A uniform number in [0, 1) from the salt and the user id."""
    digest = hashlib.sha256(f"{salt}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / SCALE


@dataclass(frozen=True)
class Assignment:
    experiment: Experiment
    variant: Variant


def variant_of(experiment: Experiment, user_id: str) -> Variant:
    total = sum(v.weight for v in experiment.variants)
    point, edge = unit_hash(experiment.salt, user_id) * total, 0.0
    for variant in experiment.variants:
        edge += variant.weight
        if point < edge:
            return variant
    return experiment.variants[-1]  # rounding at the very top


def assignments(policy: Policy, user_id: str) -> list[Assignment]:
    """The user's experiment and variant in every layer where they are in one."""
    out = []
    layers: dict[str, list[Experiment]] = {}
    for e in policy.experiments:
        if e.active:
            layers.setdefault(e.layer, []).append(e)
    for layer, experiments in layers.items():
        point, edge = unit_hash(f"layer:{layer}", user_id), 0.0
        for e in experiments:
            edge += e.traffic
            if point < edge:
                out.append(Assignment(e, variant_of(e, user_id)))
                break
    return out


def assignment_for(policy: Policy, user_id: str, action: str) -> Assignment | None:
    """The experiment (if any) that decides what this user gets for `action`."""
    for a in assignments(policy, user_id):
        if action in a.experiment.actions:
            return a
    return None

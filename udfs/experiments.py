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


def layer_assignment(policy: Policy, layer: str, user_id: str) -> Assignment | None:
    """The user's experiment and variant in one layer, if they are in one there."""
    point, edge = unit_hash(f"layer:{layer}", user_id), 0.0
    for e in policy.active_layers[layer]:
        edge += e.traffic
        if point < edge:
            return Assignment(e, variant_of(e, user_id))
    return None


def assignments(policy: Policy, user_id: str) -> list[Assignment]:
    """The user's experiment and variant in every layer where they are in one."""
    found = (layer_assignment(policy, layer, user_id) for layer in policy.active_layers)
    return [a for a in found if a is not None]


def assignment_for(
    policy: Policy, user_id: str, action: str, known: dict[str, Assignment | None] | None = None
) -> Assignment | None:
    """The experiment (if any) that decides what this user gets for `action`. An action's
    experiments share one layer, so only that layer is hashed; `known` keeps the user's
    assignments by layer across calls (one decision tries several actions)."""
    layer = policy.action_layers.get(action)
    if layer is None:
        return None
    if known is None:
        known = {}
    if layer not in known:
        known[layer] = layer_assignment(policy, layer, user_id)
    found = known[layer]
    return found if found is not None and action in found.experiment.actions else None


def lead_assignment(policy: Policy, user_id: str) -> Assignment | None:
    """The experiment about lead scoring (and variant) the user is in, if any."""
    if policy.lead_layer is None:
        return None
    found = layer_assignment(policy, policy.lead_layer, user_id)
    return found if found is not None and found.experiment.leads else None

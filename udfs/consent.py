"""Consent per purpose (docs/privacy.md). What a user said is kept per purpose with the event time
of the update that said it; a purpose the user never spoke of takes the regime's default.

    analytics        the profile, scores, lead scores, sessions, cohort moves, the event archive
    personalization  recommendations and content actions (actions of purpose `personalization`)
    marketing        offers, discounts, emails (actions of purpose `marketing`)

An update older than what a user said since about the same purpose changes nothing for it, so
consent events may arrive in any order, late ones included.
"""

from __future__ import annotations

from collections.abc import Mapping

ANALYTICS, PERSONALIZATION, MARKETING = "analytics", "personalization", "marketing"
PURPOSES = (ANALYTICS, PERSONALIZATION, MARKETING)

# purpose -> (granted, event time of the update that said so)
Said = dict[str, tuple[bool, int]]


class ConsentRules:
    def __init__(self, defaults: Mapping[str, bool]):
        """`defaults`: what a purpose is for a user who never spoke of it (the regime)."""
        missing = set(PURPOSES) - set(defaults)
        if missing:
            raise ValueError(f"no default consent for {sorted(missing)}")
        self.defaults = dict(defaults)

    def allows(self, said: Said | None, purpose: str) -> bool:
        if said is not None and purpose in said:
            return said[purpose][0]
        return self.defaults[purpose]

    def allows_all(self, said: Said | None, purposes) -> bool:
        return all(self.allows(said, p) for p in purposes)

    def revoked(self, said: Said | None) -> bool:
        """Whether what the user said must outlive their data: a purpose the default would
        allow is refused (without the record, the user's next event would be treated as
        allowed)."""
        return said is not None and any(
            not granted and self.defaults[p] for p, (granted, _) in said.items()
        )


def updated(said: Said | None, purposes: Mapping[str, bool], ts: int) -> Said:
    """What the user said, with an update at event time `ts` applied: known purposes only, and
    only where no later update said otherwise."""
    result = dict(said or {})
    for purpose, granted in purposes.items():
        if purpose in PURPOSES and (purpose not in result or result[purpose][1] <= ts):
            result[purpose] = (bool(granted), ts)
    return result

"""How a user's state is kept in Flink keyed state: one value per user (UserState: the profile,
its timer bookkeeping, its cohort, its action ledger, the decisions awaiting an outcome and the
recent event ids), stored by a versioned codec derived from the dataclasses
(udfs/state_codec.py): (schema version, plain tuples). In thread mode PyFlink pickles every
state value, whatever type it is declared with; plain tuples pickle in C, small, where objects
pickle through Python code with their field names.

A value of an older schema version reads field by field by name; a value stored before the
state had versions reads through udfs/state_legacy.py. Either is stored in the current form
the next time the user is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import blake2b

from conf.settings import Profile as ProfileSettings
from udfs import state_legacy
from udfs.cohort_assignment import CohortState
from udfs.history import RecentEvent, RecentEvents
from udfs.profile import UserProfile
from udfs.recommend import Shopper
from udfs.schedule import Schedule
from udfs.state_codec import Codec, Custom


@dataclass(slots=True)
class UserState:
    """Everything kept for one user; `profile` is None before the first event and after a
    purge or expiry."""

    profile: UserProfile | None = None
    schedule: Schedule = field(default_factory=Schedule)
    cohort: CohortState | None = None
    ledger: str | None = None  # udfs.actions.Ledger as JSON
    awaiting: str | None = None  # udfs.attribution.Attribution as JSON, None when empty
    # Event ids seen within the allowed lateness (as 64-bit digests: a third of an id's bytes),
    # with their event time: a copy of one is a duplicate. Kept in the one state value (a
    # separate map state cost two JVM calls an event). States stored before the digests hold
    # the ids themselves, which age out the same way.
    seen: dict[int | str, int] = field(default_factory=dict)
    # The last lead record emitted: (score, cohort name, modifier ids).
    last_lead: tuple | None = None
    # The user's items for recommendations (None until the first item interaction).
    shopper: Shopper | None = None
    # What the user said of each purpose, with when (udfs/consent.py); None: nothing yet.
    consent: dict[str, tuple[bool, int]] | None = None
    # Lead scores awaiting their outcome (an Attribution as JSON, None when empty).
    awaiting_leads: str | None = None

    def reset(self) -> None:
        """Forgets everything (a purge or expiry)."""
        self.profile, self.schedule, self.cohort = None, Schedule(), None
        self.ledger = self.awaiting = self.last_lead = self.shopper = self.consent = None
        self.awaiting_leads = None
        self.seen = {}

    @property
    def empty(self) -> bool:
        """Nothing to keep: no profile and nothing the user said."""
        return self.profile is None and self.consent is None

    def has_seen(self, event_id: str) -> bool:
        return id_digest(event_id) in self.seen or event_id in self.seen

    def remember(self, event_id: str, ts: int, limit: int) -> None:
        """Keeps the event id; beyond `limit` ids the oldest goes (a copy of it would count
        again: only a user with more than `limit` events within the allowed lateness)."""
        self.seen[id_digest(event_id)] = ts
        if len(self.seen) > limit:
            del self.seen[min(self.seen, key=self.seen.__getitem__)]

    def forget_seen(self, before_ts: int) -> None:
        """Event ids older than the lateness horizon: any copy of them is refused as late."""
        if any(ts < before_ts for ts in self.seen.values()):
            self.seen = {e: ts for e, ts in self.seen.items() if ts >= before_ts}


def id_digest(event_id: str) -> int:
    """A 64-bit digest of an event id, the same in every process (unlike hash())."""
    return int.from_bytes(blake2b(event_id.encode(), digest_size=8).digest(), "little")


def custom_types(s: ProfileSettings | None) -> dict[type, Custom]:
    """The recent events are stored as parallel lists (smaller than a tuple per event); their
    capacity is configuration, not state."""
    capacity = s.recent_events if s is not None else 0

    def encode(recent: RecentEvents) -> tuple:
        items = recent.items
        return tuple([[r[i] for r in items] for i in range(len(RecentEvent._fields))])

    def decode(value: tuple) -> RecentEvents:
        return RecentEvents(capacity, [RecentEvent(*r) for r in zip(*value, strict=True)])

    return {RecentEvents: Custom(encode, decode)}


class StateCodec:
    """Stores and reads UserState values."""

    def __init__(self, s: ProfileSettings):
        self.s = s
        self.codec = Codec(UserState, custom_types(s))

    def pack(self, user: UserState) -> tuple:
        return self.codec.encode(user)

    def unpack(self, value: tuple | None) -> UserState:
        if value is None:
            return UserState()
        if isinstance(value[0], int):
            return self.codec.decode(value)
        return UserState(*state_legacy.unpack(value, self.s))

    @staticmethod
    def holds_seen_ids(value: tuple) -> bool:
        """Whether a stored value has the user's seen event ids: all but the oldest layouts."""
        return isinstance(value[0], int) or state_legacy.holds_seen_ids(value)

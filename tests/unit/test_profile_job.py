"""The profile job's keyed function over in-memory stand-ins for Flink's state and timers: what
it keeps for a user, and that a purge or expiry leaves nothing behind (no JVM needed)."""

import dataclasses
import json

import pytest
from pyflink.common import Row
from pyflink.common.types import RowKind

from conf import settings as settings_module
from jobs import profile as job
from jobs.control import ScoringSettings
from tests.unit.profile_events import DAY, MINUTE, T0, cart, page, purchase, view
from tests.unit.test_profile import legacy_value
from udfs import outputs, profile_state
from udfs.events import ENVELOPE_FIELDS, ConsentUpdate, Event, EventType, event_to_dict
from udfs.profile import PROFILE_COLUMNS
from udfs.user_pipeline import PipelineSettings, lead_moved

CONFIG = settings_module.load("local")
S = CONFIG.profile


class FakeValueState:
    def __init__(self):
        self.stored = None

    def value(self):
        return self.stored

    def update(self, value):
        self.stored = value

    def clear(self):
        self.stored = None


class FakeMapState(dict):
    def contains(self, key):
        return key in self

    def put(self, key, value):
        self[key] = value

    def remove(self, key):
        del self[key]


class FakeCounter:
    def __init__(self):
        self.count = 0

    def inc(self, n: int = 1):
        self.count += n


class FakeRuntime:
    """One user's state, as Flink scopes it to the current key."""

    def __init__(self):
        self.values, self.maps, self.counters, self.gauges = {}, {}, {}, {}

    def get_state(self, descriptor):
        return self.values.setdefault(descriptor.name, FakeValueState())

    def get_map_state(self, descriptor):
        return self.maps.setdefault(descriptor.name, FakeMapState())

    def get_metrics_group(self):
        return self

    def counter(self, name):
        return self.counters.setdefault(name, FakeCounter())

    def gauge(self, name, read):
        self.gauges[name] = read


class FakeTimers:
    def __init__(self):
        self.watermark = -(2**63)
        self.registered = set()
        self.firing = None

    def current_watermark(self):
        return self.watermark

    def register_event_time_timer(self, ts):
        # A timer registered again while it fires was seen to be lost on PyFlink (dormant
        # profiles never forgotten): the job must not rely on it.
        assert ts != self.firing, f"timer {ts} registered again while it fires"
        self.registered.add(ts)

    def delete_event_time_timer(self, ts):
        self.registered.discard(ts)


class FakeContext:
    """The context of a record, a timer or a control record."""

    def __init__(self):
        self.timers = FakeTimers()
        self.key = None
        self.broadcast = FakeMapState()  # one subtask's copy of the broadcast state

    def timer_service(self):
        return self.timers

    def get_broadcast_state(self, descriptor):
        return self.broadcast

    def get_current_key(self):
        return self.key


TAG = {output: job.FLINK_OUTPUTS[output].tag for output in outputs.EMITTED}
SCORE_TAGS = tuple(
    TAG[o]
    for o in (
        outputs.SCORES,
        outputs.LEADS,
        outputs.LEAD_OUTCOMES,
        outputs.COHORT_MOVES,
        outputs.ACTIONS,
        outputs.OUTCOMES,
    )
)
NO_MODELS = ScoringSettings(CONFIG.models, CONFIG.leads, registry_dir=None)


class Harness:
    """Runs the keyed function; score outputs are kept apart in `scored`, by tag id, and the
    archive rows in `archived`."""

    def __init__(self, settings=S, scoring=NO_MODELS, in_force=(), ctx=None, privacy=None):
        """`in_force`: the control records of the submission; `ctx`: a context whose broadcast
        state a snapshot restored; `privacy`: instead of the shipped consent regime."""
        self.runtime, self.ctx = FakeRuntime(), ctx or FakeContext()
        pipeline = PipelineSettings(
            CONFIG.events, settings, scoring, privacy=privacy or CONFIG.privacy
        )
        self.function = job.BuildProfiles(pipeline, tuple(in_force))
        self.function.open(self.runtime)
        self.scored = {tag.tag_id: [] for tag in SCORE_TAGS}
        self.archived = []

    def keep(self, out_records) -> list:
        rest = []
        for out in out_records:
            if isinstance(out, tuple) and out[0] in SCORE_TAGS:
                self.scored[out[0].tag_id].append(out[1])
            elif isinstance(out, tuple) and out[0] == TAG[outputs.ARCHIVE]:
                self.archived.append(out[1])
            else:
                rest.append(out)
        return rest

    def send(self, event: Event, offset: int = 0) -> list:
        """The event as the source gives it: raw JSON, keyed by its user."""
        return self.send_raw(json.dumps(event_to_dict(event)).encode(), event.user_id, offset)

    def send_raw(self, payload: bytes, user_key: str, offset: int = 0) -> list:
        self.ctx.key = user_key
        record = Row(payload, "events", 0, offset)
        return self.keep(self.function.process_element(record, self.ctx))

    def control(self, record) -> None:
        """A record of the control topic reaches the function."""
        self.function.process_broadcast_element(record.encode(), self.ctx)

    def advance(self, watermark: int) -> list:
        """Moves the watermark and fires the due timers, earliest first, as Flink does."""
        out, timers = [], self.ctx.timers
        timers.watermark = watermark
        while due := sorted(t for t in timers.registered if t <= watermark):
            timers.registered.discard(due[0])
            timers.firing = due[0]
            out += self.keep(self.function.on_timer(due[0], self.ctx))
            timers.firing = None
        return out

    def user(self) -> profile_state.UserState:
        """What the keyed state holds for the user now."""
        return self.function.states.unpack(self.function.user.value())

    def state_is_empty(self) -> bool:
        values = all(v.value() is None for v in self.runtime.values.values())
        return values and not any(self.runtime.maps.values())

    def holds_only_consent(self) -> bool:
        """The user's state is what they said of their consent, and nothing else."""
        user = self.user()
        others = all(v.value() is None for k, v in self.runtime.values.items() if k != "user")
        return user == profile_state.UserState(consent=user.consent) and others


def revocation(ts: int, user: str = "u1") -> Event:
    """The user revokes consent to analytics (and keeps marketing)."""
    purposes = {"analytics": False, "marketing": True}
    return Event(
        f"consent-{ts}", user, "s1", EventType.CONSENT_UPDATE, ts, 1, ConsentUpdate(purposes)
    )


def counters(h):
    return {name: c.count for name, c in h.runtime.counters.items() if c.count}


def test_each_event_updates_the_profile_and_one_timer_is_pending():
    h = Harness()
    [first] = h.send(page(T0))
    [second] = h.send(view(T0 + MINUTE))
    assert (first.version, second.version, second.events) == (1, 2, 2)
    assert h.ctx.timers.registered == {T0 + S.session_gap_ms}  # the first session close


def test_a_duplicate_event_id_is_ignored_and_counted():
    h = Harness()
    e = page(T0)
    h.send(e)
    assert h.send(e, offset=1) == []
    assert counters(h) == {"duplicate_events": 1}


def test_event_ids_of_the_map_state_they_were_kept_in_before_are_moved_into_the_value():
    h = Harness()
    e = page(T0)
    h.send(e)
    h.function.user.update(legacy_value()[:5])  # as stored before the ids moved in
    old = h.runtime.maps.setdefault("seen-event-ids", FakeMapState())
    old.put(e.event_id, e.ts)
    assert h.send(e, offset=1) == []
    assert counters(h) == {"duplicate_events": 1}
    assert not old and h.user().seen == {e.event_id: e.ts}


def test_an_event_beyond_the_allowed_lateness_is_dead_lettered_as_late():
    h = Harness()
    h.send(page(T0 + 10 * S.allowed_lateness_ms))
    h.advance(T0 + 5 * S.allowed_lateness_ms)
    [(tag, letter)] = h.send(page(T0), offset=7)
    record = json.loads(letter.value)
    assert tag == TAG[outputs.DEAD_LETTERS]
    assert (record["reason"], record["dead_letter_id"]) == ("late", "events-0-7")
    assert [row.source_offset for row in h.archived] == [0, 7]  # archived all the same


def test_each_valid_event_is_archived_with_where_it_came_from():
    h = Harness()
    e = page(T0)
    h.send(e, offset=3)
    h.send(e, offset=4)  # a duplicate is archived (its own record) but not counted twice
    assert [(r.event_id, r.user_id, r.ts_ms, r.source_offset) for r in h.archived] == [
        (e.event_id, "u1", T0, 3),
        (e.event_id, "u1", T0, 4),
    ]
    assert json.loads(h.archived[0].properties) == {
        k: v for k, v in event_to_dict(e).items() if k not in ENVELOPE_FIELDS
    }
    assert h.user().profile.events == 1


@pytest.mark.parametrize(
    ("payload", "user_key", "reason"),
    [
        (b"{not json", "", "invalid_json"),
        (json.dumps(event_to_dict(page(T0))).encode(), "u2", "schema_violation"),
    ],
    ids=["malformed", "keyed-to-another-user"],
)
def test_a_record_that_is_not_a_valid_event_of_its_key_is_dead_lettered(payload, user_key, reason):
    h = Harness()
    [(tag, letter)] = h.send_raw(payload, user_key, offset=5)
    assert tag == TAG[outputs.DEAD_LETTERS]
    record = json.loads(letter.value)
    assert (record["reason"], record["dead_letter_id"]) == (reason, "events-0-5")
    assert h.archived == [] and h.state_is_empty()


def test_closing_a_session_emits_its_summary_and_a_new_profile_version():
    h = Harness()
    h.send(page(T0))
    h.send(view(T0 + MINUTE))
    out = h.advance(T0 + MINUTE + S.session_gap_ms)
    sessions = [row for tag, row in (o for o in out if isinstance(o, tuple))]
    profiles = [o for o in out if not isinstance(o, tuple)]
    assert [(s.session_id, s.events) for s in sessions] == [("s1", 2)]
    assert [(p.version, p.sessions) for p in profiles] == [(3, 1)]
    assert h.ctx.timers.registered == {T0 + MINUTE + S.ttl_ms}


def test_a_timer_due_before_an_event_fires_first_though_the_watermark_lags():
    h = Harness()
    h.send(page(T0))
    h.send(view(T0 + MINUTE))
    close_at = T0 + MINUTE + S.session_gap_ms
    # The watermark has not moved; the next event is later than the close by the bound.
    new = page(close_at + S.out_of_orderness_ms, session="s2")
    out = h.send(new)
    profiles = [o for o in out if not isinstance(o, tuple)]
    sessions = [row for tag, row in (o for o in out if isinstance(o, tuple))]
    assert [s.session_id for s in sessions] == ["s1"]
    # The close's record; the event's is held back (within emit_interval_ms), its scores not.
    assert [(p.version, p.events, p.sessions) for p in profiles] == [(3, 2, 1)]
    assert [(r.event_id, r.profile_version) for r in h.scored["scores"][-2:]] == [
        (None, 3),
        (new.event_id, 4),
    ]
    assert close_at not in h.ctx.timers.registered
    assert h.advance(close_at) == [], "the timer it replaced does nothing"


def test_a_timer_due_within_the_bound_of_an_event_waits_for_the_watermark():
    h = Harness()
    h.send(page(T0))
    close_at = T0 + S.session_gap_ms
    # An event of the user less than the bound after the close may still be followed by an
    # older one of the same session: the close waits for event time.
    out = h.send(page(close_at + S.out_of_orderness_ms - 1, session="s2"))
    assert [(p.version, p.sessions) for p in out] == [(2, 0)]
    assert close_at in h.ctx.timers.registered


# Long enough ago that the long-term retention has passed before now (no event from the future).
OLD = T0 - S.long_term_ttl_ms - 30 * DAY


def profile_rows(out) -> list:
    return [o for o in out if not isinstance(o, tuple)]


def test_after_the_ttl_the_short_term_layers_go_and_the_row_says_dormant():
    h = Harness()
    h.send(page(T0))
    h.send(purchase(T0 + MINUTE, total=40.0))
    out = h.advance(T0 + MINUTE + S.ttl_ms)
    [dormant] = profile_rows(out)[-1:]
    profile = h.user().profile
    assert (dormant.dormant, dormant.events, dormant.purchase_count) == (True, 2, 1)
    assert dormant.version == profile.version
    assert profile.recent.items == [] and profile.sessions.open == {}
    assert (profile.events, profile.lifetime.total, profile.baseline.n) == (2, 40.0, 1)
    assert h.ctx.timers.registered == {T0 + MINUTE + S.long_term_ttl_ms}
    assert counters(h) == {"profiles_turned_dormant": 1}


def test_after_the_long_term_ttl_state_timers_and_rows_are_gone():
    h = Harness()
    h.send(page(OLD))
    h.advance(OLD + S.ttl_ms)
    h.scored = {tag: [] for tag in h.scored}
    out = h.advance(OLD + S.long_term_ttl_ms)
    [deletion] = profile_rows(out)
    assert (deletion.get_row_kind(), deletion.user_id) == (RowKind.DELETE, "u1")
    scores = h.scored["scores"] + h.scored["leads"]
    assert [(r.get_row_kind(), r.user_id) for r in scores] == [(RowKind.DELETE, "u1")] * 2
    assert h.state_is_empty() and h.ctx.timers.registered == set()
    assert counters(h) == {"profiles_turned_dormant": 1, "profiles_expired": 1}
    [fresh] = h.send(page(OLD + S.long_term_ttl_ms + DAY, session="s2"))
    assert (fresh.version, fresh.events) == (1, 1)


def test_a_customer_returning_after_the_ttl_continues_from_the_long_term_layer():
    h = Harness()
    h.send(purchase(T0, total=30.0))
    back = T0 + S.ttl_ms + 90 * DAY
    # The watermark has not expired the state yet: the event does what the timers would.
    out = h.send(purchase(back, total=50.0, session="s2"))
    rows = profile_rows(out)
    assert [(r.dormant, r.events) for r in rows] == [(False, 1), (True, 1), (False, 2)]
    last = rows[-1]
    assert (last.purchase_count, last.spend_total, last.spend_mean) == (2, 80.0, 40.0)
    assert last.days_since_purchase == 0.0
    assert counters(h) == {"profiles_turned_dormant": 1}
    assert h.ctx.timers.registered == {back + S.session_gap_ms}


def test_an_event_after_the_long_term_ttl_starts_afresh_before_the_watermark_expires_it():
    h = Harness()
    h.send(page(OLD))
    out = h.send(page(OLD + S.long_term_ttl_ms + MINUTE, session="s2"))
    rows = profile_rows(out)
    assert [(r.get_row_kind(), r.version, r.events) for r in rows] == [
        (RowKind.UPDATE_AFTER, 2, 1),  # s1 closed
        (RowKind.UPDATE_AFTER, 3, 1),  # dormant
        (RowKind.DELETE, None, None),  # forgotten
        (RowKind.UPDATE_AFTER, 1, 1),  # a new profile
    ]
    assert counters(h) == {"profiles_turned_dormant": 1, "profiles_expired": 1}


def test_revoking_analytics_consent_purges_state_and_timers_and_emits_a_deletion():
    h = Harness()
    h.send(page(T0))
    deletion, (tag, erasure) = h.send(revocation(T0 + MINUTE))
    assert deletion.get_row_kind() is RowKind.DELETE
    assert (deletion.user_id, deletion.version, deletion.record) == ("u1", None, None)
    assert tag == TAG[outputs.ERASURES]
    assert (erasure.user_id, erasure.reason) == ("u1", "analytics_revoked")
    assert h.holds_only_consent()
    assert h.user().consent["analytics"] == (False, T0 + MINUTE)
    assert h.ctx.timers.registered == set()
    assert h.advance(2**62) == []  # nothing left to fire or emit


def test_updates_are_held_back_to_one_per_interval_and_the_session_close_carries_them():
    h = Harness(S.model_copy(update={"emit_interval_ms": 10 * MINUTE}))
    assert len(h.send(page(T0))) == 1
    assert h.send(view(T0 + MINUTE)) == []
    assert h.send(view(T0 + 2 * MINUTE)) == []
    assert h.advance(T0 + 10 * MINUTE) == []  # no timer waits for a held-back record
    [closed] = profile_rows(h.advance(T0 + 2 * MINUTE + S.session_gap_ms))
    assert (closed.version, closed.events, closed.sessions) == (4, 3, 1)


@pytest.mark.parametrize(("min_change", "leads"), [(0.0, 3), (1.0, 1)])
def test_lead_records_go_out_when_the_score_moves_by_the_configured_step(min_change, leads):
    scoring = dataclasses.replace(
        NO_MODELS, leads=NO_MODELS.leads.model_copy(update={"min_change": min_change})
    )
    h = Harness(scoring=scoring)
    for i, make in enumerate([page, view, view]):
        h.send(make(T0 + i * MINUTE))
    assert len(h.scored["scores"]) == 3  # scores on every update
    assert len(h.scored["leads"]) == leads
    assert h.user().last_lead[0] == h.scored["leads"][-1].score


def test_lead_moved_compares_score_cohort_and_modifiers():
    last = (0.50, "Browsers", ())
    assert lead_moved(None, last, 0.01)
    assert not lead_moved(last, (0.505, "Browsers", ()), 0.01)
    assert lead_moved(last, (0.51, "Browsers", ()), 0.01)
    assert lead_moved(last, (0.50, "Buyers", ()), 0.01)
    assert lead_moved(last, (0.50, "Browsers", (3,)), 0.01)


def test_a_significant_event_emits_its_profile_record_at_once_within_the_interval():
    h = Harness()
    assert len(h.send(page(T0))) == 1
    assert h.send(view(T0 + 1000)) == []  # held back: within emit_interval_ms
    [record] = h.send(cart(T0 + 2000))
    assert (record.version, record.events) == (3, 3)
    assert [r.profile_version for r in h.scored["scores"]] == [1, 2, 3]  # scores: every one


@pytest.mark.parametrize("kind", ["page", "view"])
def test_profile_rows_carry_every_column_and_json_details(kind):
    h = Harness()
    [row] = h.send(page(T0) if kind == "page" else view(T0))
    assert row.get_row_kind() is RowKind.UPDATE_AFTER  # an upsert of the user's profile
    assert len(row) == len(PROFILE_COLUMNS) + 2
    assert json.loads(row.details)["recent"][0]["ts"] == T0
    value = json.loads(row.record)  # the Kafka value: every column, details spliced in as JSON
    assert value == {**{n: row[n] for n in PROFILE_COLUMNS}, "details": json.loads(row.details)}


def test_a_purge_also_deletes_the_users_scores_and_lead_score():
    h = Harness()
    h.send(page(T0))
    h.send(revocation(T0 + MINUTE))
    score, lead = h.scored["scores"][-1], h.scored["leads"][-1]
    assert [r.get_row_kind() for r in (score, lead)] == [RowKind.DELETE, RowKind.DELETE]
    assert (score.user_id, score.record, lead.user_id, lead.record) == ("u1", None, "u1", None)
    first = h.scored["scores"][0]
    assert first.get_row_kind() is RowKind.UPDATE_AFTER
    assert json.loads(first.record)["ranked"] == json.loads(first.ranked)  # spliced as JSON


def test_the_end_of_the_input_closes_sessions_but_expires_nobody():
    h = Harness()
    h.send(page(OLD))
    out = h.advance(job.END_OF_EVENT_TIME)
    sessions = [
        row for tag, row in (o for o in out if isinstance(o, tuple)) if tag == TAG[outputs.SESSIONS]
    ]
    assert [s.session_id for s in sessions] == ["s1"]
    assert [(r.get_row_kind(), r.dormant) for r in profile_rows(out)] == [
        (RowKind.UPDATE_AFTER, False)
    ]
    assert h.user().profile.events == 1 and h.ctx.timers.registered == set()
    assert counters(h) == {}

"""The profile job's per-user work, as one pure object: records in, the user's state updated in
place, output records (udfs.outputs.Emitted) out. The Flink function (jobs/profile.py) only
loads and stores the state, keeps the user's timer where `state.schedule.wake_at` says and
forwards the outputs; the benchmark's ceiling, baseline and Quix Streams peer call this same
code with state in a dict.

    on_record(payload, source, key, watermark)  parse; dead letters (malformed, late)
    on_event(state, event, watermark, source)   consent (udfs/consent.py), archive, lateness,
                                                de-duplication, what is due before the event,
                                                expiry, the profile update, attribution,
                                                emission: profile, scores, decision
    on_timer(state, time, end_of_input)         session closes, outcome windows, expiry

Event time only: `watermark` is the caller's, and the end of the input is told, not guessed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from conf.policy import RECOMMENDED_ITEMS, Policy
from conf.settings import EventContract, Privacy, Settings
from conf.settings import Profile as ProfileSettings
from conf.settings import Recommendations as RecommendationSettings
from udfs import outputs
from udfs.actions import Ledger, decide
from udfs.attribution import Attribution, Pending
from udfs.consent import ANALYTICS, MARKETING, PERSONALIZATION, ConsentRules, updated
from udfs.events import (
    DeadLetter,
    Event,
    EventParser,
    EventType,
    Reason,
    SourceRef,
)
from udfs.experiments import lead_assignment
from udfs.leads import Modifier
from udfs.outputs import Emitted
from udfs.profile import ProfileSnapshot, UserProfile
from udfs.profile_state import UserState
from udfs.pseudonyms import Pseudonyms, configured, identity, subject_of
from udfs.recommend import Hyperplanes, Shopper, segment_vector
from udfs.recommendation_steps import FORGET
from udfs.rfm import RfmBreakpoints
from udfs.scoring import ModelSet
from udfs.user_scores import UserScores, decision_context, is_competitor_view, score_user

if TYPE_CHECKING:
    from jobs.control import ScoringSettings

# The watermark at the end of the input (Long.MAX_VALUE): every timer fires.
END_OF_EVENT_TIME = 2**63 - 1
# What a lead score awaiting its outcome is (udfs.attribution.Pending.action).
LEAD = "lead_score"
# Why a user is erased (outputs.ERASURES).
ANALYTICS_REVOKED, REQUESTED = "analytics_revoked", "requested"
# What a user says of their data is carried out whenever it comes.
NEVER_LATE = frozenset({EventType.CONSENT_UPDATE, EventType.ERASURE_REQUEST})
# Events whose profile record goes out at once, whatever profile.emit_interval_ms says.
SIGNIFICANT = frozenset({EventType.ADD_TO_CART, EventType.CHECKOUT_START, EventType.PURCHASE})


class Live(Protocol):
    """What the pipeline scores and decides with, as of now (jobs.control.LiveModels)."""

    models: ModelSet | None
    modifiers: list[Modifier]
    policy: Policy | None
    cohort_names: dict[int, dict[int, str]]

    @property
    def breakpoints(self) -> RfmBreakpoints | None: ...


class Counter(Protocol):
    def inc(self) -> None: ...


@dataclass(frozen=True)
class PipelineSettings:
    """Everything the per-user pipeline is configured with."""

    contract: EventContract
    profile: ProfileSettings
    scoring: ScoringSettings  # the models, lead scores and actions, and where they are kept
    recommendations: RecommendationSettings | None = None  # None: no recommendations
    privacy: Privacy = Privacy()
    pseudonyms: Pseudonyms | None = None  # None: analytical outputs carry users' own ids
    data_end_ts: int | None = None  # a bounded run's latest event time, when known up front

    @classmethod
    def of(cls, config: Settings, scoring: ScoringSettings, recommending: bool) -> PipelineSettings:
        """As configured, with the configured pseudonyms (recommendations if `recommending`)."""
        r = config.recommendations if recommending else None
        privacy = config.privacy
        return cls(config.events, config.profile, scoring, r, privacy, configured(privacy))


def item_interactions(event: Event) -> list[tuple[str, str | None, float | None]]:
    """The items an event touches, (item id, category, price) as the event tells them."""
    data = event.data
    if event.type is EventType.PRODUCT_VIEW:
        return [(data.product_id, data.category, data.price)]
    if event.type is EventType.ADD_TO_CART:
        return [(data.product_id, None, data.price)]
    if event.type is EventType.WISHLIST_ADD:
        return [(data.product_id, None, None)]
    if event.type is EventType.PURCHASE:
        return [(i.product_id, i.category, i.price) for i in data.items]
    return []


def lead_moved(last: tuple | None, current: tuple, min_change: float) -> bool:
    """Whether a lead record goes out: the first, a score moved by at least `min_change`, or
    another cohort or other modifiers ((score, cohort name, modifier ids) each)."""
    if last is None or min_change == 0 or last[1:] != current[1:]:
        return True
    return abs(current[0] - last[0]) >= min_change


class UserPipeline:
    def __init__(
        self,
        settings: PipelineSettings,
        live: Live,
        counter: Callable[[str], Counter],
        parser: EventParser | None = None,
    ):
        """`counter(name)`: a metric counter (Flink's in the job); `parser`: instead of the
        contract's (a pinned clock in tests)."""
        c = settings.contract
        self.s, self.scoring, self.live = settings.profile, settings.scoring, live
        self.recommending = settings.recommendations
        if self.recommending is not None:
            r = self.recommending
            self.hyperplanes = Hyperplanes(r.lsh_bits, r.lsh_seed)
        self.parser = parser or EventParser(c.max_bytes, c.min_ts_ms, c.max_future_skew_ms)
        # The latest event time this pipeline has seen; a backtest tells where its input ends
        # (in batch mode users come one after another, so none has seen it by then).
        self.latest_ts: int | None = settings.data_end_ts
        self.runs_out_timers = settings.data_end_ts is not None  # a backtest, in batch mode
        self.duplicates = counter("duplicate_events")
        self.late = counter("late_events_dead_lettered")
        self.purges = counter("profiles_purged")
        self.dormancies = counter("profiles_turned_dormant")
        self.expiries = counter("profiles_expired")
        self.decisions = counter("actions_decided")
        self.dropped_outcomes = counter("outcomes_dropped_on_purge")
        self.declined = counter("action_requests_declined")
        self.consent = ConsentRules(settings.privacy.defaults)
        # Who analytical outputs name (udfs/pseudonyms.py), and the archive.
        self.subject = subject_of(settings.pseudonyms)
        archive_pseudonymized = settings.privacy.pseudonymize_archive
        self.archive_subject = self.subject if archive_pseudonymized else identity
        # What a user's consent did not allow, by purpose: events not profiled (analytics),
        # item interactions not learnt from and content actions not decided (personalization),
        # offers not decided (marketing).
        self.refused = {
            purpose: counter(f"refused_without_{purpose}_consent")
            for purpose in (ANALYTICS, PERSONALIZATION, MARKETING)
        }

    # ------------------------------------------------------------ records and events

    def on_record(
        self, payload: bytes, source: SourceRef, key: str, watermark: int
    ) -> tuple[Event | None, list[Emitted]]:
        """The record's event (None when it is dead-lettered) and its dead letter, if any. An
        event later than the allowed lateness is dead-lettered and returned all the same: its
        user's consent decides whether on_event archives it. A late consent update or erasure
        request is no dead letter: it is carried out like any other."""
        parsed = self.parser.parse(payload, source)
        if isinstance(parsed, Event) and parsed.user_id != key:
            # The source's JSON path read the user id otherwise: this is another user's state.
            detail = f"user_id {parsed.user_id!r} is not the record's user key {key!r}"
            parsed = DeadLetter(Reason.SCHEMA_VIOLATION, detail, payload, source)
        if isinstance(parsed, DeadLetter):
            return None, [outputs.dead_letter(parsed)]
        if self.is_late(parsed, watermark) and parsed.type not in NEVER_LATE:
            self.late.inc()
            detail = (
                f"event time {parsed.ts} is more than the allowed lateness behind watermark"
                f" {watermark}"
            )
            return parsed, [outputs.dead_letter(DeadLetter(Reason.LATE, detail, payload, source))]
        return parsed, []

    def is_late(self, event: Event, watermark: int) -> bool:
        return event.ts < watermark - self.s.allowed_lateness_ms

    def on_event(
        self, user: UserState, event: Event, watermark: int, source: SourceRef | None = None
    ) -> list[Emitted]:
        """`source`: where the event's record came from, for its archive row (None: not
        archived, as when archived history is replayed)."""
        s, out = self.s, []
        if event.type is EventType.CONSENT_UPDATE:
            return self.on_consent(user, event, source)
        if event.type is EventType.ERASURE_REQUEST:
            return self.erase(user, event.user_id, event.ts, REQUESTED, event.data.request_id)
        if not self.consent.allows(user.consent, ANALYTICS):
            self.refused[ANALYTICS].inc()
            return out
        if source is not None:
            out.append(outputs.archived(event, source, self.archive_subject(event.user_id)))
        if self.is_late(event, watermark):
            return out  # dead-lettered by on_record
        if user.has_seen(event.event_id):
            self.duplicates.inc()
            return out
        self.latest_ts = event.ts if self.latest_ts is None else max(self.latest_ts, event.ts)
        if user.profile is not None:
            expired = self.fire_due_timers(user, event.ts - s.out_of_orderness_ms, out)
            if not expired and user.profile.expires_at(s) <= event.ts:
                # Expired, though the watermark has not yet fired its timer: do what it would do.
                self.catch_up(user, event.ts, out)
        user.remember(event.event_id, event.ts, s.max_seen_ids)
        if event.type is EventType.ACTION_REQUEST:
            self.on_action_request(user, event, out)
            return out
        user.profile = user.profile or UserProfile.new(event.user_id, s)
        user.profile.apply(event, watermark, s)
        self.attribute(user, event, out)
        snapshot = self.emit(user, event.ts, out, True, event.type in SIGNIFICANT, event)
        if self.recommending is not None:
            if self.consent.allows(user.consent, PERSONALIZATION):
                self.touch_items(user, event, snapshot, out)
            elif item_interactions(event):
                self.refused[PERSONALIZATION].inc()
        return out

    def on_action_request(self, user: UserState, event: Event, out: list) -> None:
        """An action asked for through the API, decided now on the user's current scores by the
        rules of the job's own decisions but the threshold; one not decided (no profile yet, an
        unknown action, consent, eligibility, cooldown, cap) is counted."""
        if user.profile is None or self.live.policy is None:
            self.declined.inc()
            return
        sc, live = self.scoring, self.live
        snapshot = user.profile.snapshot(self.s, live.breakpoints)
        scored = score_user(
            snapshot,
            live.models,
            user.cohort,
            event.event_id,
            False,
            sc.models,
            sc.leads,
            live.modifiers,
        )
        # Decided at the request's time: cooldowns and daily caps count from it.
        scores = dataclasses.replace(scored.scores, ts=event.ts)
        if not self.decide(user, scores, snapshot, out, event.data.action):
            self.declined.inc()

    def on_consent(self, user: UserState, event: Event, source: SourceRef | None) -> list[Emitted]:
        """What the user said is kept, whatever the update's lateness. Analytics refused: the
        user is forgotten everywhere (what they said is all that stays). Personalization
        refused: their recommendations are. The update itself is archived while analytics is
        allowed."""
        rules, out = self.consent, []
        profiled = rules.allows(user.consent, ANALYTICS)
        personalized = rules.allows(user.consent, PERSONALIZATION)
        user.consent = updated(user.consent, event.data.purposes, event.ts)
        if rules.allows(user.consent, ANALYTICS):
            if source is not None:
                out.append(outputs.archived(event, source, self.archive_subject(event.user_id)))
        elif profiled:
            return self.erase(user, event.user_id, event.ts, ANALYTICS_REVOKED, None)
        if personalized and not rules.allows(user.consent, PERSONALIZATION):
            self.drop_recommendations(user, event.user_id, event.ts, out)
        return out

    def on_timer(self, user: UserState, time: int, end_of_input: bool) -> list[Emitted]:
        """The user's timer at event time `time` has fired (`end_of_input`: the watermark
        jumped to the end of event time). In a backtest every later timer of the user fires here
        at the end of the input, in order: Flink's batch mode never fires a timer set by a timer
        once the input has ended."""
        out: list[Emitted] = []
        while True:
            user.schedule.wake_at = None  # this timer has fired
            if user.profile is None:
                return out
            # At the end of the input (a bounded run, or a drain) event time jumps to its end,
            # but the users' time ends with the data: a layer expires only if a watermark as
            # far as the latest event would have expired it. (Watermarks are periodic: the last
            # one before the end can trail the data by any stretch of event time.)
            expire = not end_of_input or time <= self.data_watermark()
            self.catch_up(user, time, out, expire=expire)
            later = user.schedule.wake_at
            # Streaming leaves later timers to Flink, which fires them at the end of the input.
            if not end_of_input or not self.runs_out_timers or later is None or later <= time:
                return out
            time = later

    def data_watermark(self) -> int:
        """The watermark the latest event seen by this pipeline allows."""
        if self.latest_ts is None:
            return -END_OF_EVENT_TIME
        return self.latest_ts - self.s.out_of_orderness_ms

    # ------------------------------------------------------------ what is due

    def fire_due_timers(self, user: UserState, horizon: int, out: list) -> bool:
        """Does now what the user's timers due by event time `horizon` will do, in their order.
        An event at `ts` means no watermark has passed `ts - out_of_orderness` yet, so a timer
        due by then has not fired; firing it before the event, instead of whenever the watermark
        gets there, makes the order of a user's updates the same in every run, restarts
        included (watermarks are not checkpointed, so timers fire later after a restore).
        Returns whether the user expired (the state is then cleared)."""
        while (due := user.schedule.wake_at) is not None and due <= horizon:
            user.schedule.wake_at = None
            if self.catch_up(user, due, out):
                return True
        return False

    def catch_up(self, user: UserState, now: int, out: list, expire: bool = True) -> bool:
        """Everything due by event time `now`: session closes, outcome windows, expiry
        (unless not to `expire`, when no expiry timer is set either). Returns whether the whole
        profile expired (the user's state is then cleared)."""
        s, profile, schedule = self.s, user.profile, user.schedule
        closed = profile.close_sessions(now, s)
        out += [outputs.session(c, self.subject(c.user_id)) for c in closed]
        if schedule.outcome_due is not None and schedule.outcome_due <= now:
            self.expire_outcomes(user, now, out)
        user.forget_seen(now - s.allowed_lateness_ms)
        self.emit(user, now, out, bool(closed), bool(closed), expiry_timer=expire)
        return expire and self.expire(user, now, out)

    def expire(self, user: UserState, now: int, out: list) -> bool:
        """The layers due to expire by `now`. The short-term ones: the profile turns dormant and
        its row and record say so. The long-term one: the user is forgotten, and the profile,
        score and lead rows are deleted (tombstones on the topics), as on a purge."""
        s, profile = self.s, user.profile
        if profile.dormant_since is None and profile.expires_at(s) <= now:
            self.dormancies.inc()
            profile.expire_short_term(now, s)
            snapshot = profile.snapshot(s, self.live.breakpoints)
            out.append(outputs.profile(snapshot, self.subject(profile.user_id)))
            user.schedule.last_emit = now
            self.emit(user, now, out, scores=False, significant=False)
        if profile.expires_at(s) <= now:
            self.expiries.inc()
            self.forget(user, profile.user_id, now, out)
            self.reset(user)
            return True
        return False

    # ------------------------------------------------------------ emission and scoring

    def emit(
        self,
        user: UserState,
        now: int,
        out: list,
        scores: bool,
        significant: bool,
        event: Event | None = None,
        expiry_timer: bool = True,
    ) -> ProfileSnapshot | None:
        """Scores the profile if asked to (every update that can change them) and emits its
        record if the change is `significant` or emit_interval_ms has passed since the last one
        (Schedule.should_emit), and moves the user's single timer to the earliest time it is
        needed (among them the expiry, unless not `expiry_timer`). Returns the snapshot scored,
        if any."""
        s, profile, schedule = self.s, user.profile, user.schedule
        snapshot = None
        if scores:
            record = schedule.should_emit(now, s.emit_interval_ms, significant)
            snapshot = profile.snapshot(s, self.live.breakpoints, full=record)
            if record:
                out.append(outputs.profile(snapshot, self.subject(profile.user_id)))
            self.score(user, snapshot, event, out)
        due = profile.timers(s)
        expiry = profile.expires_at(s)
        if not expiry_timer or expiry <= now:
            # Due now, the caller expires the layer next and sets the following expiry (a timer
            # registered again while it fires can be lost); at the end of the input, never.
            due.discard(expiry)
        schedule.reschedule(due)
        return snapshot

    def score(
        self, user: UserState, snapshot: ProfileSnapshot, event: Event | None, out: list
    ) -> None:
        live, sc = self.live, self.scoring
        arm = lead_assignment(live.policy, user.profile.user_id) if live.policy else None
        scored = score_user(
            snapshot,
            live.models,
            user.cohort,
            event.event_id if event is not None else None,
            is_competitor_view(event, sc.leads.competitor_brands),
            sc.models,
            sc.leads,
            live.modifiers if arm is None or arm.variant.lead_modifiers else [],
        )
        if scored.cohort_state is not None:
            user.cohort = scored.cohort_state
        version, subject = snapshot.columns["version"], self.subject(user.profile.user_id)
        out += outputs.scores(scored, version, live.cohort_names, subject)
        lead = scored.scores.lead
        current = (lead.score, scored.scores.cohort_name, lead.modifiers)
        if lead_moved(user.last_lead, current, sc.leads.min_change):
            user.last_lead = current
            names = (arm.experiment.name, arm.variant.name) if arm is not None else None
            out.append(outputs.lead(scored.scores, version, subject, names))
            if names is not None:
                self.await_lead_outcome(user, scored.scores, version, names)
        if live.policy is not None:
            self.decide(user, scored.scores, snapshot, out)

    # ------------------------------------------------------------ recommendations

    def segment_profile(self, snapshot: ProfileSnapshot, profile: UserProfile) -> dict:
        """The user's current segment profile as a vector (udfs/recommend.py)."""
        trends = profile.trends
        weight, total = trends.price_log_ratio
        return segment_vector(
            snapshot.segment,
            trends.category_shares(),
            total / weight if weight > 0 else 0.0,
            self.recommending,
        )

    def bucket(self, snapshot: ProfileSnapshot, profile: UserProfile) -> int:
        return self.hyperplanes.bucket(self.segment_profile(snapshot, profile))

    def touch_items(
        self, user: UserState, event: Event, snapshot: ProfileSnapshot, out: list
    ) -> None:
        """The event's item interactions to the knowledge step, and a request for a new list
        when they change it significantly."""
        r, items = self.recommending, item_interactions(event)
        if not items:
            return
        shopper = user.shopper = user.shopper or Shopper()
        bucket = self.bucket(snapshot, user.profile)
        kind = event.type.value
        for item, category, price in items:
            touch = shopper.touch(item, kind, event.ts, category, price, bucket, r)
            out += outputs.touches(touch)
        if shopper.wants_list(kind, bucket, r):
            self.ask_for_list(user, event.ts, event.event_id, bucket, out)

    def ask_for_list(
        self, user: UserState, ts: int, event_id: str | None, bucket: int, out: list, **extra
    ) -> None:
        shopper = user.shopper = user.shopper or Shopper()
        shares = user.profile.trends.category_shares()
        request = shopper.request(user.profile.user_id, ts, bucket, shares, event_id)
        out.append(outputs.request(request.user_id, {**request.to_json(), **extra}))

    def offer(self, user: UserState, decision, snapshot: ProfileSnapshot, out: list) -> None:
        """An offer of the user's recommendations: ranked (then sent) by the ranking step."""
        if self.recommending is None:
            decision.payload[RECOMMENDED_ITEMS[0]] = []
            out.append(outputs.action(decision))
            return
        offer = list(outputs.action(decision).values)
        bucket = self.bucket(snapshot, user.profile)
        blend = decision.payload.get("blend")
        self.ask_for_list(
            user, decision.ts, decision.event_id, bucket, out, offer=offer, blend=blend
        )

    def erase(
        self, user: UserState, user_id: str, ts: int, reason: str, request_id: str | None
    ) -> list[Emitted]:
        """The user is forgotten here (state, the rows of deletable outputs, recommendations)
        and everywhere else by jobs/erasure.py; what they said of consent stays."""
        out: list[Emitted] = []
        self.forget(user, user_id, ts, out)
        self.purge(user)
        out.append(outputs.erasure(user_id, ts, reason, request_id, self.subject(user_id)))
        return out

    def forget(self, user: UserState, user_id: str, ts: int, out: list) -> None:
        """A forgotten user's rows of every deletable output, recommendations included."""
        out += outputs.user_deletions(self.subject(user_id))
        self.drop_recommendations(user, user_id, ts, out)

    @staticmethod
    def drop_recommendations(user: UserState, user_id: str, ts: int, out: list) -> None:
        """The user's item memory, and their list wherever the ranking step keeps it."""
        if user.shopper is not None:
            out.append(outputs.request(user_id, {"user_id": user_id, "ts": ts, FORGET: True}))
            user.shopper = None

    # ------------------------------------------------------------ actions and outcomes

    def decide(
        self,
        user: UserState,
        sc: UserScores,
        snapshot: ProfileSnapshot,
        out: list,
        requested: str | None = None,
    ) -> bool:
        """Decides the update's action, if any (`requested`: only that one, asked for);
        returns whether one was decided."""
        ledger, refused = Ledger.from_json(user.ledger), []
        allowed = frozenset(
            p for p in (PERSONALIZATION, MARKETING) if self.consent.allows(user.consent, p)
        )
        context = decision_context(sc, snapshot, allowed)
        decision = decide(self.live.policy, context, ledger, refused, requested)
        for purpose in refused:
            self.refused[purpose].inc()
        if decision is None:
            return False
        self.decisions.inc()
        user.ledger = ledger.to_json()
        self.attribute_later(user, decision)
        key, placeholder = RECOMMENDED_ITEMS
        if decision.payload.get(key) == placeholder:
            self.offer(user, decision, snapshot, out)
        else:
            out.append(outputs.action(decision))
        return True

    def attribute_later(self, user: UserState, decision) -> None:
        """The decision awaits its outcome."""
        attribution = self.attribution(user)
        attribution.decided(
            Pending(
                decision.decision_id,
                decision.action,
                decision.ts,
                decision.experiment,
                decision.variant,
                decision.delivered,
            )
        )
        self.store_attribution(user, attribution)

    def await_lead_outcome(
        self, user: UserState, sc: UserScores, version: int, arm: tuple[str, str]
    ) -> None:
        """A lead score in an experiment about lead scoring awaits a purchase (its id: the
        profile version of its record)."""
        lead, leads = sc.lead, self.lead_attribution(user)
        unmodified = lead.base_intent * lead.base_capacity
        leads.decided(
            Pending(str(version), LEAD, sc.ts, *arm, True, None, (lead.score, unmodified))
        )
        self.store_attribution(user, leads=leads)

    def attribute(self, user: UserState, event: Event, out: list) -> None:
        """A purchase converts the decisions and lead scores awaiting it; a response is kept
        with its own decision."""
        if user.schedule.outcome_due is None:
            return  # nothing awaits an outcome
        attribution, leads = self.attribution(user), self.lead_attribution(user)
        if event.type is EventType.PURCHASE:
            converted = attribution.purchased(event.ts, event.data.total)
            out += self.lead_outcomes(user, leads.purchased(event.ts, event.data.total))
        elif event.type is EventType.OFFER_RESPONSE:
            attribution.responded(event.data.action_id, event.data.response)
            converted = []
        else:
            return
        self.store_attribution(user, attribution, leads)
        out += [outputs.outcome(o) for o in converted]

    def expire_outcomes(self, user: UserState, now: int, out: list) -> None:
        attribution, leads = self.attribution(user), self.lead_attribution(user)
        expired = attribution.expire(now)
        out += self.lead_outcomes(user, leads.expire(now))
        self.store_attribution(user, attribution, leads)
        out += [outputs.outcome(o) for o in expired]

    def lead_outcomes(self, user: UserState, outcomes: list) -> list[Emitted]:
        subject = self.subject(user.profile.user_id)
        return [outputs.lead_outcome(o, subject) for o in outcomes]

    def attribution(self, user: UserState) -> Attribution:
        window = self.scoring.actions.attribution_window_ms
        return Attribution.from_json(user.profile.user_id, window, user.awaiting)

    def lead_attribution(self, user: UserState) -> Attribution:
        horizon = self.scoring.leads.horizon_ms
        return Attribution.from_json(user.profile.user_id, horizon, user.awaiting_leads)

    def store_attribution(
        self, user: UserState, actions: Attribution | None = None, leads: Attribution | None = None
    ) -> None:
        """Keeps what awaits an outcome (None: unchanged); the user's timer wakes at the
        earliest end of a window."""
        if actions is None:
            actions = self.attribution(user)
        if leads is None:
            leads = self.lead_attribution(user)
        user.awaiting, user.awaiting_leads = actions.to_json(), leads.to_json()
        deadlines = [d for d in (actions.next_deadline(), leads.next_deadline()) if d is not None]
        user.schedule.outcome_due = min(deadlines, default=None)

    def purge(self, user: UserState) -> None:
        """Consent to analytics is gone: decisions awaiting an outcome are not measured."""
        self.purges.inc()
        for awaiting in (user.awaiting, user.awaiting_leads):
            for _ in json.loads(awaiting) if awaiting else ():
                self.dropped_outcomes.inc()
        self.reset(user)

    def reset(self, user: UserState) -> None:
        """Forgets the user, but what they said of a purpose the default would allow: without
        it, their next event would be taken as allowed."""
        said = user.consent
        user.reset()
        if self.consent.revoked(said):
            user.consent = said

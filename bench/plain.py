"""The profile job's per-event work without Flink: parse, de-duplicate, update the profile,
score it with the ONNX models and decide an action, with state in dicts. The benchmark's
baseline and Quix Streams peer run this, and its cost alone is the ceiling. It imports no
PyFlink, so the peer's own environment needs only the project's pure modules."""

from __future__ import annotations

import json

from conf.settings import Settings
from jobs.live_models import LiveModels, ScoringSettings, scoring_settings
from udfs.actions import Ledger, decide
from udfs.cohort_assignment import CohortState
from udfs.events import DeadLetter, EventParser, EventType, SourceRef, revokes_profiling
from udfs.profile import UserProfile
from udfs.schedule import Schedule
from udfs.user_scores import decision_context, is_competitor_view, score_user


class PlainProfiler:
    def __init__(self, config: Settings, scoring: ScoringSettings | None = None, **parser_args):
        """`scoring`: what to score with (default: the configured models, modifiers and policy);
        `parser_args`: EventParser overrides (a pinned clock in tests)."""
        c, self.s = config.events, config.profile
        self.parser = EventParser(c.max_bytes, c.min_ts_ms, c.max_future_skew_ms, **parser_args)
        self.out_of_orderness_ms = config.profile.out_of_orderness_ms
        self.scoring = scoring or scoring_settings(config)
        self.live = LiveModels(self.scoring)
        self.live.refresh(force=True)
        self.profiles: dict[str, UserProfile] = {}
        self.schedules: dict[str, Schedule] = {}
        self.cohorts: dict[str, CohortState | None] = {}
        self.ledgers: dict[str, Ledger] = {}
        self.seen: set[str] = set()
        self.max_ts = 0

    def process(self, raw: bytes, source: SourceRef) -> list[tuple[bytes, bytes]]:
        """One raw record in; the (key, value) records it causes out: a dead letter, or the
        user's profile-and-scores record when the update is emitted (as the job would)."""
        parsed = self.parser.parse(raw, source)
        if isinstance(parsed, DeadLetter):
            return [(parsed.dead_letter_id.encode(), parsed.to_json())]
        event, s = parsed, self.s
        if event.event_id in self.seen:
            return []
        self.seen.add(event.event_id)
        self.max_ts = max(self.max_ts, event.ts)
        user = event.user_id
        if event.type is EventType.CONSENT_UPDATE:
            if revokes_profiling(event):
                for state in (self.profiles, self.schedules, self.cohorts, self.ledgers):
                    state.pop(user, None)
                return [(user.encode(), b"")]
            return []
        profile = self.profiles.get(user) or UserProfile.new(user, s)
        self.profiles[user] = profile
        profile.apply(event, self.max_ts - self.out_of_orderness_ms, s)
        schedule = self.schedules.setdefault(user, Schedule())
        if not schedule.should_emit(event.ts, s.emit_interval_ms):
            return []
        return [(user.encode(), self.scored_record(profile, event))]

    def scored_record(self, profile: UserProfile, event) -> bytes:
        live, sc = self.live, self.scoring
        snapshot = profile.snapshot(self.s)
        scored = score_user(
            snapshot,
            live.models,
            self.cohorts.get(profile.user_id),
            event.event_id,
            is_competitor_view(event, sc.leads.competitor_brands),
            sc.models,
            sc.leads,
            live.modifiers,
        )
        self.cohorts[profile.user_id] = scored.cohort_state
        decision = None
        if live.policy is not None:
            ledger = self.ledgers.setdefault(profile.user_id, Ledger())
            decision = decide(live.policy, decision_context(scored.scores, snapshot), ledger)
        scores = scored.scores
        record = {
            "profile": snapshot.columns,
            "event_id": scores.event_id,
            "cohort": scores.cohort,
            "learned": {t: p.p for t, p in scores.learned.items()},
            "lead": scores.lead.score,
            "action": decision.action if decision is not None else None,
        }
        return json.dumps(record, separators=(",", ":"), default=str).encode()

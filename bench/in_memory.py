"""The profile job's per-user pipeline (udfs.user_pipeline) without Flink: each user's state in a
dict, event-time timers in a heap, and the watermark as the job's source sets it: per input
partition the latest event time less the out-of-orderness, the job's the least of its
partitions' (none until every partition has had an event). A consumer that reads one
partition ahead of another therefore sees the same lateness as the job, not a flood of late
events. The benchmark's ceiling, baseline and Quix
Streams peer all run this, so every ratio compares the same work. It imports no PyFlink: the
peer's own environment needs only the project's pure modules."""

from __future__ import annotations

import heapq
from collections import Counter

from conf.settings import Settings
from jobs.control import (
    ControlRecord,
    LiveModels,
    ScoringSettings,
    first_records,
    read_sources,
    scoring_settings,
)
from udfs import outputs
from udfs.events import EventParser, SourceRef
from udfs.outputs import Emitted
from udfs.profile_state import UserState
from udfs.recommendation_steps import InMemorySteps
from udfs.user_pipeline import PipelineSettings, UserPipeline

MESSAGES = (outputs.TOUCHES, outputs.REQUESTS)


class Tally:
    """A metric counter."""

    def __init__(self):
        self.count = 0

    def inc(self) -> None:
        self.count += 1


class InMemoryPipeline:
    def __init__(
        self,
        config: Settings,
        partitions: int = 1,
        scoring: ScoringSettings | None = None,
        parser: EventParser | None = None,
        control: list[ControlRecord] | None = None,
    ):
        """`partitions`: of the input; `scoring`: its settings; `parser`: instead of the
        contract's (a pinned clock); `control`: what to score and decide with (default: the
        registered models, the policy files and the cohort modifiers, as a job would start)."""
        scoring = scoring or scoring_settings(config)
        control = first_records(read_sources(config)) if control is None else control
        self.live = LiveModels(scoring, control)
        self.counters: dict[str, Tally] = {}
        recommending = config.recommendations.enabled
        settings = PipelineSettings.of(config, scoring, recommending)
        self.pipeline = UserPipeline(settings, self.live, self.counter, parser)
        # The recommendation steps, as the job runs them after build-profiles.
        self.steps = InMemorySteps(config.recommendations) if recommending else None
        self.out_of_orderness_ms = config.profile.out_of_orderness_ms
        self.users: dict[str, UserState] = {}
        self.timers: list[tuple[int, str]] = []  # (time, user); stale entries are skipped
        self.latest: dict[int, int] = {}  # partition -> its latest event time
        self.partitions = partitions
        self.watermark = -(2**63)

    def counter(self, name: str) -> Tally:
        return self.counters.setdefault(name, Tally())

    def process(self, payload: bytes, source: SourceRef, key: str) -> list[Emitted]:
        """One record of user `key` in; what it causes out, the timers it makes due included."""
        event, out = self.pipeline.on_record(payload, source, key, self.watermark)
        if event is not None:
            user = self.users.get(key) or UserState()
            registered = user.schedule.wake_at
            out += self.pipeline.on_event(user, event, self.watermark, source)
            self.keep(key, user, registered)
            partition = source.partition
            self.latest[partition] = max(self.latest.get(partition, event.ts), event.ts)
            if len(self.latest) == self.partitions:
                self.advance(min(self.latest.values()) - self.out_of_orderness_ms, out)
        return self.recommend(out)

    def recommend(self, out: list[Emitted]) -> list[Emitted]:
        """The messages to the recommendation steps taken through them: the outputs only."""
        if self.steps is None:
            return out
        made = self.steps.handle(out)
        self.steps.advance(self.watermark)
        return [e for e in out if e.output not in MESSAGES] + made

    def keep(self, key: str, user: UserState, registered: int | None) -> None:
        if user.empty:
            self.users.pop(key, None)
            return
        self.users[key] = user
        wake_at = user.schedule.wake_at
        if wake_at is not None and wake_at != registered:
            heapq.heappush(self.timers, (wake_at, key))

    def advance(self, watermark: int, out: list[Emitted]) -> None:
        """Moves the watermark forward and fires the timers it passes, earliest first."""
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        while self.timers and self.timers[0][0] <= watermark:
            time, key = heapq.heappop(self.timers)
            user = self.users.get(key)
            if user is None or user.schedule.wake_at != time:
                continue  # moved or cleared since
            out += self.pipeline.on_timer(user, time, end_of_input=False)
            self.keep(key, user, None)

    def counts(self) -> Counter:
        return Counter({name: t.count for name, t in self.counters.items() if t.count})


def kafka_records(out: list[Emitted]) -> list[tuple[bytes, bytes | None]]:
    """The (key, value) records of the outputs bound for Kafka, as the job writes them: keyed by
    user, a deletion as a tombstone; dead letters keyed by their source coordinates."""
    records = []
    for emitted in out:
        output = emitted.output
        if output.kafka:
            user_id = emitted.values[output.names.index("user_id")]
            records.append((user_id.encode(), emitted.value))
        elif output is outputs.DEAD_LETTERS:
            records.append(emitted.values)
    return records

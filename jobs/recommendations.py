"""The profile job's recommendation steps in Flink (udfs/recommendation_steps.py holds their
logic; docs/recommendations.md the design):

    build-profiles --touches (keyed by item or bucket)--> learn-items --summaries (broadcast)--,
                   --requests (keyed by user)--------------------------------------------> rank
    rank -> recommendations (upserts and deletes by user) and offers with their items (actions)

learn-items keeps one Knowledge per item and per bucket in keyed state, with an event-time timer
for a pending summary or its expiry. rank keeps every summary in broadcast state (checkpointed;
read into memory once per subtask) and each user's latest list in keyed state, with the requests
waiting behind an offer held while it knows no item (until the watermark passes the offer). There
is no cycle: build-profiles never reads what the later steps know, and an offer that needs a list
is finished by rank.
"""

from __future__ import annotations

import json

from pyflink.common import Row, Types
from pyflink.datastream import DataStream, KeyedStream
from pyflink.datastream.functions import (
    KeyedBroadcastProcessFunction,
    KeyedProcessFunction,
    RuntimeContext,
)
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor
from pyflink.java_gateway import get_gateway

from conf.settings import Recommendations as RecommendationSettings
from jobs.flink_outputs import FLINK_OUTPUTS, MESSAGE, RECOMMENDATIONS
from udfs import outputs
from udfs.recommend import Knowledge, Touch
from udfs.recommendation_steps import KnowledgeStep, RankingStep
from udfs.user_pipeline import END_OF_EVENT_TIME

SUMMARY = Types.ROW_NAMED(["key", "body"], [Types.STRING(), Types.STRING()])
# Every item's and bucket's latest summary (JSON), in every subtask of rank.
CATALOGUE_STATE = MapStateDescriptor("catalogue", Types.STRING(), Types.STRING())


def keyed_by_first_field(stream: DataStream, value_type) -> KeyedStream:
    """Rows (key, value) keyed by their key in the JVM, the value handed to the keyed function
    (PyFlink's key_by would run a Python step per record)."""
    gateway = get_gateway()
    key_type = Types.ROW([Types.STRING()])
    j_keyed = stream._j_data_stream.keyBy(
        gateway.jvm.KeyByKeySelector(), key_type.get_java_type_info()
    )
    return KeyedStream(j_keyed, value_type, stream)


class LearnItems(KeyedProcessFunction):
    def __init__(self, settings: RecommendationSettings):
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        self.step = KnowledgeStep(self.settings)
        descriptor = ValueStateDescriptor("knowledge", Types.PICKLED_BYTE_ARRAY())
        self.state = runtime_context.get_state(descriptor)

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context):
        key = ctx.get_current_key()
        knowledge = self.state.value() or Knowledge()
        summary = self.step.on_touch(knowledge, key, Touch.from_json(json.loads(value.body)))
        self.keep(knowledge, ctx)
        if summary is not None:
            yield Row(key=key, body=outputs.compact(summary))

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        key = ctx.get_current_key()
        knowledge = self.state.value()
        if knowledge is None:
            return
        knowledge.timer_at = None  # this timer has fired
        ended = ctx.timer_service().current_watermark() >= END_OF_EVENT_TIME
        forgotten, summary = self.step.on_timer(knowledge, timestamp, end_of_input=ended)
        if forgotten:
            self.state.clear()
            yield Row(key=key, body=None)
            return
        # At the end of the input every timer fires at once: one set again would fire again.
        self.keep(knowledge, ctx, after=END_OF_EVENT_TIME if ended else timestamp)
        if summary is not None:
            yield Row(key=key, body=outputs.compact(summary))

    def keep(self, knowledge: Knowledge, ctx, after: int | None = None) -> None:
        """Stores the key's state with one timer, at its earliest need after `after` (an
        earlier registered timer stays: it finds nothing due and moves on)."""
        wanted = knowledge.wake_at(self.settings)
        later = after is None or wanted > after
        if later and (knowledge.timer_at is None or wanted < knowledge.timer_at):
            ctx.timer_service().register_event_time_timer(wanted)
            knowledge.timer_at = wanted
        self.state.update(knowledge)


# What rank emits: recommendations (main output) and offers (the side output of actions).
OFFERS = FLINK_OUTPUTS[outputs.ACTIONS]


class Rank(KeyedBroadcastProcessFunction):
    """Requests keyed by user, with the summaries broadcast."""

    def __init__(self, settings: RecommendationSettings):
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        self.step = RankingStep(self.settings)
        self.loaded = False  # the broadcast state is read into memory on the first call
        descriptor = ValueStateDescriptor("latest-list", Types.PICKLED_BYTE_ARRAY())
        self.latest = runtime_context.get_state(descriptor)
        # Requests waiting behind an offer held until some item is known (RankingStep.answer).
        descriptor = ValueStateDescriptor("waiting-requests", Types.PICKLED_BYTE_ARRAY())
        self.waiting = runtime_context.get_state(descriptor)

    def load(self, ctx) -> None:
        self.loaded = True
        for key, body in ctx.get_broadcast_state(CATALOGUE_STATE).items():
            self.step.on_summary(key, json.loads(body))

    def process_broadcast_element(self, value: Row, ctx: KeyedBroadcastProcessFunction.Context):
        if not self.loaded:
            self.load(ctx)
        catalogue = ctx.get_broadcast_state(CATALOGUE_STATE)
        if value.body is None:
            catalogue.remove(value.key)
            self.step.on_summary(value.key, None)
        else:
            catalogue.put(value.key, value.body)
            self.step.on_summary(value.key, json.loads(value.body))

    def process_element(self, value: Row, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext):
        if not self.loaded:
            self.load(ctx)
        queue = (self.waiting.value() or []) + [json.loads(value.body)]
        yield from self.answer(queue, ctx.timer_service().current_watermark(), ctx)

    def on_timer(self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext):
        """The watermark passed a held offer: every summary of earlier events is here."""
        if not self.loaded:
            self.load(ctx)
        yield from self.answer(self.waiting.value() or [], timestamp, ctx)

    def answer(self, queue: list[dict], watermark: int, ctx):
        out, ids, waiting = self.step.answer(self.latest.value(), queue, watermark)
        if ids is None:
            self.latest.clear()
        else:
            self.latest.update(ids)
        if waiting:
            self.waiting.update(waiting)
            ctx.timer_service().register_event_time_timer(waiting[0]["ts"])
        else:
            self.waiting.clear()
        for emitted in out:
            if emitted.output is outputs.ACTIONS:
                yield OFFERS.tag, OFFERS.row(emitted)
            else:
                yield RECOMMENDATIONS.row(emitted)


def recommend(
    touches: DataStream, requests: DataStream, settings: RecommendationSettings
) -> tuple[DataStream, DataStream]:
    """The recommendations stream and the offers' action stream."""
    summaries = (
        keyed_by_first_field(touches, MESSAGE)
        .process(LearnItems(settings), SUMMARY)
        .name("learn-items")
        .uid("learn-items")
    )
    ranked = (
        keyed_by_first_field(requests, MESSAGE)
        .connect(summaries.broadcast(CATALOGUE_STATE))
        .process(Rank(settings), RECOMMENDATIONS.row_type)
        .name("rank-recommendations")
        .uid("rank-recommendations")
    )
    offered = DataStream(ranked._j_data_stream.getSideOutput(OFFERS.tag.get_java_output_tag()))
    return ranked, offered

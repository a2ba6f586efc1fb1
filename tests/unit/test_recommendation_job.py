"""The profile job's recommendation steps as Flink functions over in-memory keyed state and
timers: build-profiles sends item interactions and requests, learn-items sends summaries, rank
sends the lists and finishes the offers of recommendations with the items of the user's list."""

import json

from pyflink.common import Row
from pyflink.common.types import RowKind

from conf.settings import Actions
from jobs import recommendations as steps
from jobs.control import ScoringSettings
from jobs.flink_outputs import FLINK_OUTPUTS
from tests.unit.profile_events import MINUTE, T0, cart, page, view
from tests.unit.test_decision_step import policy_record
from tests.unit.test_profile_job import CONFIG, FakeContext, Harness, revocation
from udfs import outputs
from udfs.user_pipeline import END_OF_EVENT_TIME, PipelineSettings

R = CONFIG.recommendations
OFFER_POLICY = """
actions:
  - {name: picks, score: intent, threshold: 0.0, priority: 1, cooldown_ms: 86400000,
     cap_per_day: 1, purposes: [personalization],
     payload: {kind: recommendations, items: "${recommendations}",
     blend: popularity}}
"""
TOUCHES, REQUESTS = (FLINK_OUTPUTS[o].tag for o in (outputs.TOUCHES, outputs.REQUESTS))


class KeyedState:
    """A value state scoped to the context's current key, as Flink scopes it."""

    def __init__(self, ctx):
        self.ctx, self.by_key = ctx, {}

    def value(self):
        return self.by_key.get(self.ctx.key)

    def update(self, value):
        self.by_key[self.ctx.key] = value

    def clear(self):
        self.by_key.pop(self.ctx.key, None)


class KeyedRuntime:
    def __init__(self, ctx):
        self.ctx, self.states = ctx, {}

    def get_state(self, descriptor):
        return self.states.setdefault(descriptor.name, KeyedState(self.ctx))


class Steps:
    """build-profiles (Harness), learn-items and rank, wired as the job wires them."""

    def __init__(self, tmp_path, policy=OFFER_POLICY):
        scoring = ScoringSettings(CONFIG.models, CONFIG.leads, registry_dir=None, actions=Actions())
        self.profiles = Harness(scoring=scoring, in_force=[policy_record(tmp_path, policy, 1)])
        settings = PipelineSettings(CONFIG.events, CONFIG.profile, scoring, R)
        self.profiles.function.settings = settings
        self.profiles.function.open(self.profiles.runtime)
        self.learn_ctx, self.rank_ctx = FakeContext(), FakeContext()
        self.learn = steps.LearnItems(R)
        self.learn.open(KeyedRuntime(self.learn_ctx))
        self.rank = steps.Rank(R)
        self.rank.open(KeyedRuntime(self.rank_ctx))
        self.touches, self.requests, self.lists, self.offers = [], [], [], []

    def send(self, event):
        for out in self.profiles.send(event):
            if isinstance(out, tuple) and out[0] in (TOUCHES, REQUESTS):
                (self.touches if out[0] == TOUCHES else self.requests).append(out[1])
        actions = self.profiles.scored["actions"]
        assert actions == [], "an offer of recommendations goes out from rank, with its items"

    def flow(self):
        """What build-profiles sent, through learn-items then rank."""
        for row in self.touches:
            self.learn_ctx.key = row.key
            for summary in self.learn.process_element(row.message, self.learn_ctx):
                self.rank.process_broadcast_element(summary, self.rank_ctx)
        for row in self.requests:
            self.rank_ctx.key = row.key
            for out in self.rank.process_element(row.message, self.rank_ctx):
                if isinstance(out, tuple):
                    self.offers.append(out[1])
                else:
                    self.lists.append(out)
        self.touches, self.requests = [], []


def test_item_interactions_reach_their_item_and_bucket_and_a_cart_add_asks_for_a_list(tmp_path):
    s = Steps(tmp_path, policy="actions: []")
    s.send(view(T0))
    keys = [row.key for row in s.touches]
    assert keys[0] == "i:p1" and keys[1].startswith("b:")
    body = json.loads(s.touches[0].message.body)
    assert (body["item"], body["kind"], body["category"], body["price"]) == (
        "p1",
        "product_view",
        "books",
        15.0,
    )
    [first] = s.requests  # the first interaction puts the user in a bucket: a list
    s.flow()
    s.send(view(T0 + MINUTE))
    assert s.requests == []  # one more view of the same bucket: no new list yet
    s.send(cart(T0 + 2 * MINUTE))
    assert len(s.requests) == 1


def test_an_offer_carries_item_ids_that_are_in_the_users_latest_list(tmp_path):
    s = Steps(tmp_path, policy="actions: []")
    for i in range(3):  # the user's views make the catalogue (one user: the harness has one)
        s.send(view(T0 + i, item=f"p{i}"))
    s.flow()
    s.profiles.function.live.apply(policy_record(tmp_path, OFFER_POLICY, 2))
    s.send(page(T0 + MINUTE))  # its dwell makes the intent the offer's score
    s.flow()
    [offer] = s.offers
    items = json.loads(offer.payload)["items"]
    latest = json.loads(s.lists[-1].items)
    assert offer.action == "picks" and items == [i["item_id"] for i in latest] and items
    assert s.lists[-1].blend == "popularity" and s.lists[-1].user_id == "u1"
    assert json.loads(offer.record)["payload"]["items"] == items


def test_forgetting_a_user_deletes_the_list_and_its_state_in_rank(tmp_path):
    s = Steps(tmp_path, policy="actions: []")
    s.send(view(T0))
    s.flow()
    assert s.lists[-1].get_row_kind() is RowKind.UPDATE_AFTER
    s.send(revocation(T0 + MINUTE))
    s.flow()
    assert s.lists[-1].get_row_kind() is RowKind.DELETE and s.lists[-1].user_id == "u1"
    assert s.rank.latest.by_key == {}


def test_learn_items_forgets_an_item_after_its_ttl_and_tells_rank(tmp_path):
    s = Steps(tmp_path, policy="actions: []")
    s.send(view(T0))
    s.flow()
    assert "p1" in s.rank.step.catalogue.items
    s.learn_ctx.key = "i:p1"
    timers = sorted(s.learn_ctx.timers.registered)
    s.learn_ctx.timers.watermark = timers[-1]
    [gone] = s.learn.on_timer(timers[-1], s.learn_ctx)
    assert gone == Row(key="i:p1", body=None)
    s.rank.process_broadcast_element(gone, s.rank_ctx)
    assert "p1" not in s.rank.step.catalogue.items
    assert s.learn.state.value() is None


def test_rank_reads_a_restored_catalogue_before_its_first_request(tmp_path):
    s = Steps(tmp_path, policy="actions: []")
    s.send(view(T0))
    request = s.requests[0].message
    s.flow()
    restored = steps.Rank(R)
    ctx = FakeContext()
    ctx.broadcast = s.rank_ctx.broadcast  # the snapshot's broadcast state
    restored.open(KeyedRuntime(ctx))
    ctx.key = "u1"
    [listed] = restored.process_element(request, ctx)
    assert json.loads(listed.items) == json.loads(s.lists[0].items)


def test_at_the_end_of_the_input_learn_items_keeps_its_items_and_sets_no_timer_again(tmp_path):
    s = Steps(tmp_path, policy="actions: []")
    s.send(view(T0))
    s.flow()
    s.learn_ctx.key = "i:p1"
    timers = s.learn_ctx.timers
    timers.watermark = END_OF_EVENT_TIME
    for due in sorted(timers.registered):
        timers.registered.discard(due)
        assert list(s.learn.on_timer(due, s.learn_ctx)) == []
    assert timers.registered == set() and s.learn.state.value() is not None

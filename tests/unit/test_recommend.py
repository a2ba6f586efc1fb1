"""Recommendations as pure logic: the segment profile's LSH buckets, a user's item memory, item
and bucket knowledge (decay, bounds, summaries, expiry), the hybrid ranking with its reasons, and
the ranking step's lists, offers and deletions."""

import json
import random

import pytest

from conf import settings as settings_module
from conf.settings import Blend
from udfs import outputs
from udfs.recommend import (
    Catalogue,
    Hyperplanes,
    Knowledge,
    Request,
    Shopper,
    Touch,
    bucket_key,
    cosine,
    item_key,
    rank,
    segment_vector,
)
from udfs.recommendation_steps import KnowledgeStep, RankingStep, with_items

T0 = 1_767_225_600_000
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
R = settings_module.load("local").recommendations


def touch(item, ts=T0, kind="product_view", category="books", price=10.0, bucket=1, together=()):
    return Touch(item, kind, ts, category, price, bucket, tuple(together))


def random_vector(rng):
    return {f"d{i}": rng.gauss(0, 1) for i in range(8)}


def test_near_vectors_share_a_bucket_far_more_often_than_random_ones():
    rng, planes = random.Random(3), Hyperplanes(6, seed=1)
    near = far = 0
    for _ in range(300):
        v = random_vector(rng)
        nudged = {k: x + rng.gauss(0, 0.1) for k, x in v.items()}
        near += planes.bucket(v) == planes.bucket(nudged)
        far += planes.bucket(v) == planes.bucket(random_vector(rng))
    assert near > 0.6 * 300 and far < 0.15 * 300


def test_buckets_are_the_same_in_every_process_and_new_dimensions_get_directions():
    v = {"rfm0": 0.3, "c:a-new-category": 1.0, "price": -0.2}
    assert Hyperplanes(6, 1).bucket(v) == Hyperplanes(6, 1).bucket(dict(reversed(v.items())))
    assert len({Hyperplanes(6, seed).bucket(v) for seed in range(20)}) > 1


def test_the_segment_vector_holds_the_weighted_rfm_the_category_shares_and_the_price_level():
    v = segment_vector((1 / 6,) * 6, {"books": 0.75, "toys": 0.25}, 0.5, R)
    assert [v[f"rfm{i}"] for i in range(6)] == [0.0] * 6
    assert (v["c:books"], v["c:toys"]) == (R.category_weight * 0.75, R.category_weight * 0.25)
    assert v["price"] == R.price_weight * 0.5
    assert cosine(v, v) == pytest.approx(1.0)


def test_a_shopper_keeps_recent_items_bounded_and_what_was_seen_together():
    shopper = Shopper()
    s = R.model_copy(update={"recent_items": 3, "together_ms": 10 * MINUTE})
    shopper.touch("a", "product_view", T0, "books", 10.0, 1, s)
    shopper.touch("b", "product_view", T0 + MINUTE, "books", 12.0, 1, s)
    t = shopper.touch("c", "add_to_cart", T0 + 2 * MINUTE, None, 9.0, 1, s)
    assert t.together == ("b", "a")  # newest first
    late = shopper.touch("d", "product_view", T0 + 20 * MINUTE, "toys", 5.0, 1, s)
    assert late.together == ()  # nothing within together_ms
    assert [r[0] for r in shopper.recent] == ["b", "c", "d"]


def test_a_purchase_is_remembered_as_bought_and_a_known_items_category_is_reused():
    shopper = Shopper()
    shopper.touch("a", "product_view", T0, "books", 10.0, 1, R)
    t = shopper.touch("a", "add_to_cart", T0 + 1, None, None, 1, R)
    assert (t.category, t.price) == ("books", 10.0)
    shopper.touch("a", "purchase", T0 + 2, "books", 10.0, 1, R)
    assert shopper.bought == ["a"]


def test_views_ask_for_a_list_every_few_but_a_cart_add_or_a_new_bucket_at_once():
    shopper = Shopper()
    request = shopper.request("u1", T0, 1, {}, None)
    assert request.bucket == 1 and shopper.views_since_request == 0
    for i in range(R.refresh_after_views - 1):
        shopper.touch(f"p{i}", "product_view", T0 + i, "books", 1.0, 1, R)
        assert not shopper.wants_list("product_view", 1, R)
    assert shopper.wants_list("product_view", 2, R)  # another bucket
    assert shopper.wants_list("add_to_cart", 1, R)
    shopper.touch("p", "product_view", T0 + 99, "books", 1.0, 1, R)
    assert shopper.wants_list("product_view", 1, R)


def test_item_popularity_halves_per_half_life_whatever_the_order_of_touches():
    a, b = Knowledge(), Knowledge()
    early, late = touch("x", T0), touch("x", T0 + R.half_life_ms)
    a.touch_item(early, R)
    a.touch_item(late, R)
    b.touch_item(late, R)
    b.touch_item(early, R)
    assert a.popularity == pytest.approx(1.5) and b.popularity == pytest.approx(1.5)


def test_co_occurrence_and_bucket_lists_keep_only_their_strongest_items():
    s = R.model_copy(update={"co_items": 3, "bucket_items": 2})
    item, bucket = Knowledge(), Knowledge()
    for i, other in enumerate(["a", "b", "a", "c", "d", "a", "b"]):
        item.touch_item(touch("x", T0 + i, together=[other]), s)
        bucket.touch_bucket(touch(other, T0 + i, kind="add_to_cart"), s)
    assert len(item.weights) == 3 and max(item.weights, key=item.weights.get) == "a"
    assert set(bucket.weights) == {"a", "b"}  # b: the latest, kept


def test_summaries_go_at_most_once_per_interval_and_a_timer_sends_the_pending_one():
    step, state = KnowledgeStep(R), Knowledge()
    assert step.on_touch(state, item_key("x"), touch("x", T0)) is not None
    assert step.on_touch(state, item_key("x"), touch("x", T0 + 1)) is None
    due = state.wake_at(R)
    assert due == T0 + R.summary_interval_ms
    forgotten, summary = step.on_timer(state, due, end_of_input=False)
    assert not forgotten and summary["popularity"] > 1.9
    assert state.wake_at(R) == T0 + 1 + R.item_ttl_ms  # nothing pending: the expiry


def test_a_key_nobody_touches_for_the_ttl_is_forgotten_but_not_at_the_end_of_the_input():
    step, state = KnowledgeStep(R), Knowledge()
    step.on_touch(state, bucket_key(3), touch("x", T0))
    expiry = state.wake_at(R)
    assert step.on_timer(state, expiry, end_of_input=True) == (False, None)
    assert step.on_timer(state, expiry, end_of_input=False) == (True, None)


def catalogue_of(*summaries):
    catalogue = Catalogue()
    for key, summary in summaries:
        catalogue.apply(key, summary)
    return catalogue


def item(category="books", price=10.0, popularity=1.0, together=None):
    return {
        "category": category,
        "price": price,
        "popularity": popularity,
        "ref_ts": T0,
        "weights": together or {},
    }


def request(recent=(), bought=(), categories=None, prices=(), bucket=1):
    return Request("u1", T0, "e1", bucket, tuple(recent), tuple(bought), categories or {}, prices)


CATALOGUE = catalogue_of(
    (item_key("seen"), item(popularity=1.0, together={"next": 4.0, "bought": 9.0})),
    (item_key("next"), item(popularity=0.5)),
    (item_key("bought"), item(popularity=50.0)),
    (item_key("hit"), item(category="toys", price=30.0, popularity=40.0)),
    (item_key("pricey"), item(price=500.0, popularity=10.0)),
    (item_key("cheap"), item(price=9.0, popularity=5.0)),
    (bucket_key(1), {"ref_ts": T0, "weights": {"peer": 6.0, "cheap": 1.0}}),
)


def test_each_signal_ranks_its_own_candidates():
    q = request(recent=[("seen", "product_view", T0)], categories={"books": 1.0}, prices=(10.0,))
    by = {  # what each signal ranks itself (not the popular items filling a list up)
        name: [r.item for r in rank(q, CATALOGUE, blend, R) if r.score > 0]
        for name, blend in R.blends.items()
    }
    assert by["co_occurrence"][0] == "bought"  # bought by nobody here: seen together most
    assert by["neighbours"] == ["peer", "cheap"]
    assert "pricey" not in by["content"] and by["content"][0] == "bought"  # in band, popular
    assert by["popularity"][:2] == ["bought", "hit"]


def test_items_bought_are_left_out_and_each_item_says_which_signals_put_it_there():
    q = request(
        recent=[("seen", "product_view", T0)],
        bought=["bought"],
        categories={"books": 1.0},
        prices=(10.0,),
    )
    ranked = rank(q, CATALOGUE, R.blends["hybrid"], R)
    assert "bought" not in [r.item for r in ranked]
    reasons = {r.item: r.reasons for r in ranked}
    assert reasons["next"][0] == "co_occurrence" and reasons["peer"] == ("neighbours",)
    assert reasons["hit"] == ("popularity",)
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)


def test_a_blend_weighs_the_signals_by_its_config():
    q = request(recent=[("seen", "product_view", T0)])
    co_led = rank(q, CATALOGUE, Blend(co_occurrence=1.0, neighbours=0.1), R)
    peer_led = rank(q, CATALOGUE, Blend(co_occurrence=0.1, neighbours=1.0), R)
    assert co_led[0].item == "bought" and peer_led[0].item == "peer"


def test_a_blend_without_weight_is_refused():
    with pytest.raises(ValueError, match="at least one positive weight"):
        Blend()


def test_the_ranking_step_emits_a_list_only_when_it_changed():
    step = RankingStep(R)
    for key, summary in (
        (item_key("a"), item(popularity=2.0)),
        (item_key("b"), item(popularity=1.0)),
    ):
        step.on_summary(key, summary)
    body = request(categories={"books": 1.0}).to_json()
    out, ids = step.on_request(None, body)
    [record] = out
    value = json.loads(record.value)
    assert ids == ["a", "b"] == [i["item_id"] for i in value["items"]]
    assert (value["user_id"], value["blend"], value["bucket"]) == ("u1", R.blend, 1)
    assert step.on_request(ids, body) == ([], ids)


# An offer's action record (outputs.ACTIONS) as build-profiles sends it with its request.
OFFER = (
    *("d1", "u1", T0, "e1", "recommendation_offer", "drift", 0.9, 0.8),
    '{"kind":"recommendations","items":"${recommendations}"}',
    *(None, None, True, 3, "{}", None),
)


def test_an_offer_carries_the_items_of_the_list_it_was_ranked_with():
    step = RankingStep(R)
    step.on_summary(item_key("a"), item())
    offer = list(OFFER)
    body = {**request().to_json(), "offer": offer, "blend": "popularity"}
    out, ids = step.on_request(None, body)
    listed, action = out
    assert action.output is outputs.ACTIONS and json.loads(action.values[8])["items"] == ids
    assert json.loads(listed.value)["blend"] == "popularity" and ids == ["a"]
    assert with_items(offer, ["a"]).values == action.values


def test_an_unknown_blend_in_an_offer_falls_back_to_the_default():
    assert RankingStep(R).blend_of("no-such-blend") == R.blend


def test_forgetting_a_user_deletes_the_list_once():
    step = RankingStep(R)
    out, ids = step.on_request(["a"], {"user_id": "u1", "ts": T0, "forget": True})
    [deletion] = out
    assert deletion.delete and deletion.output is outputs.RECOMMENDATIONS and ids is None
    assert step.on_request(None, {"user_id": "u1", "ts": T0, "forget": True}) == ([], None)


def test_a_forgotten_item_leaves_the_catalogue_and_its_category():
    catalogue = catalogue_of((item_key("a"), item()))
    catalogue.apply(item_key("a"), None)
    assert catalogue.items == {} and catalogue.by_category["books"] == set()
    assert rank(request(categories={"books": 1.0}), catalogue, R.blends["hybrid"], R) == []


def test_every_blend_an_offer_or_experiment_names_is_configured():
    from conf.policy import RECOMMENDED_ITEMS, load_policy

    policy = load_policy()
    payloads = [a.payload for a in policy.actions]
    for experiment in policy.experiments:
        for variant in experiment.variants:
            payloads += [c.payload for c in variant.actions.values() if c.payload]
    asking = [p for p in payloads if p.get(RECOMMENDED_ITEMS[0]) == RECOMMENDED_ITEMS[1]]
    named = {p["blend"] for p in asking if "blend" in p}
    assert asking and named == {"neighbours", "popularity"} and named <= set(R.blends)


def test_a_short_list_is_filled_up_with_popular_items_scored_zero():
    q = request(bucket=9)  # an empty bucket: neighbours find nothing
    ranked = rank(q, CATALOGUE, R.blends["neighbours"], R)
    assert [r.item for r in ranked][:3] == ["bought", "hit", "pricey"]
    assert all(r.score == 0.0 and r.reasons == ("popularity",) for r in ranked)
    assert len(ranked) == len(CATALOGUE.items)  # fewer items than a list holds


def test_an_offer_waits_while_no_item_is_known_and_later_requests_queue_behind_it():
    """A job starting on a backlog: a user's offer can reach ranking before the summaries of
    earlier events do. It waits (and so does what follows it) until an item is known or the
    watermark passes it; then the user's requests are answered in order."""
    step = RankingStep(R)
    offer = list(OFFER)
    offered = {**request().to_json(), "offer": offer}
    later = {**request().to_json(), "ts": T0 + 5}
    out, last, waiting = step.answer(None, [offered, later], watermark=T0 - 1)
    assert (out, last, waiting) == ([], None, [offered, later])
    step.on_summary(item_key("a"), item())
    out, last, waiting = step.answer(None, waiting, watermark=T0 - 1)
    listed, action = out  # the later request finds the same list: nothing more goes out
    assert json.loads(action.values[8])["items"] == last == ["a"] and waiting == []
    # Knowing nothing by the offer's event time, it goes out as it is, not held for ever.
    out, last, waiting = RankingStep(R).answer(None, [offered], watermark=T0)
    assert waiting == [] and json.loads(out[-1].values[8])["items"] == []


def test_popularity_ranked_before_the_first_summaries_is_refreshed_when_they_arrive():
    catalogue = Catalogue()
    assert catalogue.popular(T0, R.half_life_ms, 5) == []
    catalogue.apply(item_key("a"), item())
    assert [i for _, i in catalogue.popular(T0 + 1, R.half_life_ms, 5)] == ["a"]

"""Recommendations in the shared stream run (the profile job over 80 users and four days, on
the real broker and PostgreSQL): every user who touched an item has a list in the
`recommendations` table, the table holds the latest record of the topic for each user, lists
leave out what the user had bought, name the signals behind each item, and an offer of
recommendations carries item ids of a list the user was shown."""

import json
from collections import defaultdict

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.integration.conftest import allowing
from udfs.recommend import SIGNALS

# An event may reach the job this long after a later one of its user (the generator's bound).
OUT_OF_ORDER_MS = 10_000


@pytest.fixture(scope="module")
def table(stream_run) -> dict[str, dict]:
    with psycopg.connect(stream_run.settings.postgres.conninfo(), row_factory=dict_row) as conn:
        rows = conn.execute("SELECT * FROM recommendations").fetchall()
    return {row["user_id"]: row for row in rows}


@pytest.fixture(scope="module")
def lists(stream_topics) -> dict[str, list[dict | None]]:
    """Each user's records of the topic in the order it holds them (one partition per user);
    None for a tombstone."""
    by_user = defaultdict(list)
    for record in stream_topics["recommendations"]:
        value = None if record.value is None else json.loads(record.value)
        by_user[record.key.decode()].append(value)
    return by_user


def shoppers(events: list[dict]) -> set[str]:
    """Users with at least one item interaction."""
    users = set()
    for e in events:
        if e["type"] in ("product_view", "add_to_cart", "wishlist_add", "purchase"):
            users.add(e["user_id"])
    return users


def test_every_user_who_touched_an_item_has_a_list_in_topic_and_table(
    stream_run, table, lists, figures
):
    """Every user who touched an item and allows personalization (the others are counted by
    the job and get no list: tests/unit/test_consent.py)."""
    events = stream_run.events
    expected = shoppers(events) & allowing(events, "personalization", stream_run.settings)
    assert expected != shoppers(events), "the run has users who refuse personalization"
    assert set(table) == expected and set(lists) == expected
    sizes = [len(row["items"]) for row in table.values()]
    limit = stream_run.settings.recommendations.items
    assert max(sizes) <= limit and sum(s == limit for s in sizes) > 0.9 * len(sizes)
    figures(f"{len(table)} users with lists, {sum(map(len, lists.values()))} list records")


def test_the_table_holds_each_users_latest_record_of_the_topic(table, lists):
    for user, records in lists.items():
        latest = records[-1]
        row = table[user]
        assert latest is not None, f"{user}: the topic ends with a tombstone, the table has a row"
        assert row == latest, user


def test_lists_leave_out_what_the_user_had_bought_and_name_their_signals(stream_run, lists):
    bought = defaultdict(list)  # user -> [(ts, item)]
    for e in stream_run.events:
        if e["type"] == "purchase":
            bought[e["user_id"]] += [(e["ts"], i["product_id"]) for i in e["items"]]
    checked = 0
    for user, records in lists.items():
        for record in filter(None, records):
            before = {item for ts, item in bought[user] if ts < record["ts"] - OUT_OF_ORDER_MS}
            ids = [i["item_id"] for i in record["items"]]
            assert not before & set(ids), f"{user} is offered what they bought: {before & set(ids)}"
            assert len(set(ids)) == len(ids)
            for item in record["items"]:
                assert item["reasons"] and set(item["reasons"]) <= set(SIGNALS)
            scores = [i["score"] for i in record["items"]]
            assert scores == sorted(scores, reverse=True)
            checked += 1
    assert checked > len(lists)


def test_every_signal_puts_items_in_some_list(lists):
    reasons = {
        reason
        for records in lists.values()
        for record in filter(None, records)
        for item in record["items"]
        for reason in item["reasons"]
    }
    assert reasons == set(SIGNALS)


def test_an_offer_of_recommendations_carries_the_items_of_a_list_the_user_was_given(
    stream_topics, lists, figures
):
    offers = []
    for record in stream_topics["actions"]:
        action = json.loads(record.value)
        if action["action"] == "recommendation_offer":
            offers.append(action)
    assert offers, "the run made no offer of recommendations"
    for offer in offers:
        items = offer["payload"]["items"]
        assert items, offer
        given = [
            [i["item_id"] for i in r["items"]]
            for r in filter(None, lists[offer["user_id"]])
            if r["ts"] <= offer["ts"]
        ]
        assert items in given, f"{offer['decision_id']}: {items} in none of the user's lists"
    figures(f"{len(offers)} offers of recommendations, each with a list's items")


def test_every_recommended_item_is_one_the_runs_events_touched(stream_run, table):
    """The catalogue is learned from the stream: nothing else can be recommended."""
    touched = set()
    for e in stream_run.events:
        if e["type"] == "purchase":
            touched |= {i["product_id"] for i in e["items"]}
        elif "product_id" in e:
            touched.add(e["product_id"])
    recommended = {i["item_id"] for row in table.values() for i in row["items"]}
    assert recommended and recommended <= touched

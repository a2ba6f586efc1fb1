"""Offline evaluation of recommendations (models/recommendations.py) on a generated history of
its own, split in time: the hybrid against each signal alone and popularity, the LSH buckets
against exact nearest neighbours, and the report `make train` writes."""

import pytest

from models import recommendations
from models.report_files import summary

# Smaller than `make train`'s evaluation (recommendations.eval_users), the same shape.
USERS, DAYS = 240, 21


@pytest.fixture(scope="module")
def evaluation(settings):
    r = settings.recommendations.model_copy(update={"eval_users": USERS, "eval_days": DAYS})
    return recommendations.evaluate(settings.model_copy(update={"recommendations": r}), print)


def test_the_hybrid_beats_popularity_on_hit_rate_by_the_stated_margin(evaluation, settings):
    r, report = settings.recommendations, evaluation.report
    hit = f"hit_rate@{r.items}"
    blends = report["blends"]
    assert set(blends) == set(r.blends)  # each component's figures, and the baseline's
    assert report["evaluated_users"] >= USERS // 3
    margin = blends[r.blend][hit] - blends["popularity"][hit]
    assert report["margin_over_popularity"] == pytest.approx(margin, abs=1e-4)
    assert margin >= 0.15, blends
    assert blends[r.blend][f"ndcg@{r.items}"] > blends["popularity"][f"ndcg@{r.items}"]


def test_lists_hold_the_configured_number_of_items_none_bought_before(evaluation, settings):
    lists = evaluation.lists[settings.recommendations.blend]
    assert lists and all(len(items) <= settings.recommendations.items for items in lists.values())
    assert (
        sum(len(items) == settings.recommendations.items for items in lists.values())
        > len(lists) * 0.9
    )


def test_lsh_buckets_keep_most_exact_neighbours_together_far_above_chance(evaluation):
    lsh = evaluation.report["lsh"]
    assert lsh["recall"] > 3 * lsh["chance_recall"] and lsh["recall"] > 0.4


def test_the_generators_tastes_explain_much_of_the_hold_out(evaluation):
    """The truth behind the neighbours' signal: users of an archetype shop its favourites."""
    assert evaluation.report["taste_share"] > 0.4


def test_the_training_report_shows_every_blend_and_the_margin(evaluation):
    report = {
        "training": {
            "history": "h",
            "from_ts_ms": 0,
            "to_ts_ms": 1,
            "holdout_from_ts_ms": 1,
            "events": 1,
            "users": 1,
            "samples_seen": 1,
            "samples": 1,
        },
        "gate": {"decision": "active", "reasons": []},
        "propensity": {},
        "recommendations": evaluation.report,
    }
    text = summary(1, report)
    for blend in evaluation.report["blends"]:
        assert f"| {blend} |" in text
    assert f"{evaluation.report['margin_over_popularity']:+.3f}" in text

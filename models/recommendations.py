"""Offline evaluation of recommendations (part of `make train`, or `python -m
models.recommendations`): the profile job's recommendation steps (udfs/recommendation_steps.py)
run over a generated history with state in dicts, split in time. At the split each user's list is
ranked by every blend of `recommendations.blends`, and compared with the items the user then
carts or buys in the hold-out, those bought before the split left out (they are excluded from
lists): hit rate@n (a list holds at least one), recall@n and NDCG@n, n = `recommendations.items`.

The neighbour search is checked on its own: for a sample of users, the share of their exact k
nearest neighbours (cosine of the segment profile vectors, among all users at the split) that
share their LSH bucket. The generator's truth (each archetype's favourite products) says how
much of the hold-out the users' tastes explain.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass

from conf import settings as settings_module
from conf.settings import Settings
from jobs.control import LiveModels, scoring_settings
from models.history import GeneratedHistory
from udfs.consent import PERSONALIZATION
from udfs.profile_state import UserState
from udfs.recommend import Request, cosine, rank
from udfs.recommendation_steps import InMemorySteps
from udfs.user_pipeline import PipelineSettings, UserPipeline

NEIGHBOURS_K = 10
RECALL_SAMPLE = 300
CARTED = frozenset({"add_to_cart", "purchase"})


class Tally:
    def inc(self) -> None:
        pass


@dataclass
class Evaluation:
    report: dict
    lists: dict[str, dict[str, list[str]]]  # blend -> user -> items


def replay(config: Settings, events, until_ts: int, report: Callable[[str], None]):
    """The per-user pipeline (no models or policy) and the steps over the events before
    `until_ts`, in event-time order."""
    scoring = scoring_settings(config)
    settings = PipelineSettings(
        config.events, config.profile, scoring, config.recommendations, config.privacy
    )
    pipeline = UserPipeline(settings, LiveModels(scoring, []), lambda name: Tally())
    steps = InMemorySteps(config.recommendations)
    users: dict[str, UserState] = {}
    lateness = config.profile.out_of_orderness_ms
    for n, event in enumerate(events):
        if event.ts >= until_ts:
            break
        user = users.setdefault(event.user_id, UserState())
        steps.handle(pipeline.on_event(user, event, event.ts - lateness))
        steps.advance(event.ts - lateness)
        if n and n % 100_000 == 0:
            report(f"[recommendations] {n:,} events replayed")
    return pipeline, steps, users


def relevant_items(
    events, split_ts: int, users: dict[str, UserState], personalized: Callable[[UserState], bool]
) -> dict[str, set[str]]:
    """Per user whose consent allows personalization, the items carted or bought in the
    hold-out and not bought before it (the others get no list to be measured by)."""
    relevant: dict[str, set[str]] = {}
    for event in events:
        if event.ts < split_ts or event.type.value not in CARTED:
            continue
        state = users.get(event.user_id)
        if state is not None and not personalized(state):
            continue
        bought = set(state.shopper.bought) if state and state.shopper else set()
        for item in item_ids(event):
            if item not in bought:
                relevant.setdefault(event.user_id, set()).add(item)
    return relevant


def item_ids(event) -> list[str]:
    if event.type.value == "purchase":
        return [i.product_id for i in event.data.items]
    return [event.data.product_id]


def scores_at(n: int, ranked: list[str], relevant: set[str]) -> tuple[float, float, float]:
    """(hit, recall, NDCG) of one list at n."""
    top = ranked[:n]
    hits = [i for i, item in enumerate(top) if item in relevant]
    dcg = sum(1.0 / math.log2(i + 2) for i in hits)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(n, len(relevant))))
    return float(bool(hits)), len(hits) / len(relevant), dcg / ideal


def lsh_recall(vectors: dict[str, dict], buckets: dict[str, int], seed: int) -> dict:
    """Share of the exact k nearest neighbours (cosine) of sampled users that share their
    bucket."""
    users = sorted(vectors)
    sample = random.Random(seed).sample(users, min(RECALL_SAMPLE, len(users)))
    found = total = 0
    for user in sample:
        nearest = heapq.nlargest(
            NEIGHBOURS_K,
            (u for u in users if u != user),
            key=lambda u: cosine(vectors[user], vectors[u]),
        )
        found += sum(buckets[u] == buckets[user] for u in nearest)
        total += len(nearest)
    sizes: dict[int, int] = {}
    for b in buckets.values():
        sizes[b] = sizes.get(b, 0) + 1
    return {
        "k": NEIGHBOURS_K,
        "sampled_users": len(sample),
        "recall": round(found / total, 4) if total else None,
        "buckets_in_use": len(sizes),
        "mean_users_per_bucket": round(len(buckets) / len(sizes), 1) if sizes else None,
        # The share a random pair of users shares a bucket: the recall of a random partition.
        "chance_recall": round(sum(n * n for n in sizes.values()) / len(buckets) ** 2, 4)
        if buckets
        else None,
    }


def evaluate(config: Settings, report: Callable[[str], None] = print) -> Evaluation:
    r = config.recommendations
    history = GeneratedHistory(config, r.eval_users, r.eval_days, r.eval_seed)
    span = history.span()
    split_ts = span.first_ts + int((1 - r.eval_holdout_fraction) * (span.last_ts - span.first_ts))
    events = sorted(
        (e for _, evs in history.users() for e in evs), key=lambda e: (e.ts, e.event_id)
    )
    report(f"[recommendations] {len(events):,} events of {r.eval_users} users; split in time")
    pipeline, steps, users = replay(config, events, split_ts, report)
    steps.advance(split_ts)
    consent = pipeline.consent
    relevant = relevant_items(
        events, split_ts, users, lambda state: consent.allows(state.consent, PERSONALIZATION)
    )

    vectors, buckets, requests = {}, {}, {}
    for user_id, state in users.items():
        if state.profile is None:
            continue
        snapshot = state.profile.snapshot(config.profile)
        vector = vectors[user_id] = pipeline.segment_profile(snapshot, state.profile)
        buckets[user_id] = pipeline.hyperplanes.bucket(vector)
        if user_id in relevant and state.shopper is not None:
            shares = state.profile.trends.category_shares()
            body = state.shopper.request(user_id, split_ts, buckets[user_id], shares, None)
            requests[user_id] = Request.from_json(body.to_json())

    blends, lists = {}, {}
    for name, blend in r.blends.items():
        ranked = {
            u: [x.item for x in rank(q, steps.ranking.catalogue, blend, r)]
            for u, q in requests.items()
        }
        sums = [0.0, 0.0, 0.0]
        for user, items in ranked.items():
            for i, x in enumerate(scores_at(r.items, items, relevant[user])):
                sums[i] += x
        n = len(ranked) or 1
        blends[name] = {
            f"hit_rate@{r.items}": round(sums[0] / n, 4),
            f"recall@{r.items}": round(sums[1] / n, 4),
            f"ndcg@{r.items}": round(sums[2] / n, 4),
        }
        lists[name] = ranked
    hit = f"hit_rate@{r.items}"
    margin = blends[r.blend][hit] - blends["popularity"][hit] if "popularity" in blends else None
    result = {
        "users": r.eval_users,
        "days": r.eval_days,
        "seed": r.eval_seed,
        "split_ts": split_ts,
        "evaluated_users": len(requests),
        "catalogue_items": len(steps.ranking.catalogue.items),
        "blends": blends,
        "default_blend": r.blend,
        "margin_over_popularity": round(margin, 4) if margin is not None else None,
        "lsh": lsh_recall(vectors, buckets, r.eval_seed),
        "taste_share": taste_share(history, relevant),
    }
    return Evaluation(result, lists)


def taste_share(history: GeneratedHistory, relevant: dict[str, set[str]]) -> float | None:
    """Share of the hold-out items that are among their user's archetype's favourites (the
    generator's truth): what neighbours can find that popularity cannot."""
    archetype = history.archetypes()
    favourite = {
        a: {p.product_id for products in by_category.values() for p in products}
        for a, by_category in history.generated.tastes.items()
    }
    pairs = [(u, i) for u, items in relevant.items() for i in items]
    if not pairs:
        return None
    return round(sum(i in favourite[archetype[u]] for u, i in pairs) / len(pairs), 4)


def summary(result: dict) -> str:
    lines = [
        f"Recommendations ({result['users']} generated users over {result['days']:g} days,"
        f" seed {result['seed']}; {result['evaluated_users']} users with hold-out carts or"
        " purchases):",
        "",
        "| blend | " + " | ".join(next(iter(result["blends"].values()))) + " |",
        "| --- |" + " --- |" * len(next(iter(result["blends"].values()))),
    ]
    for name, values in result["blends"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values.values()) + " |")
    lsh = result["lsh"]
    lines += [
        "",
        f"The default blend ({result['default_blend']}) beats popularity on hit rate by"
        f" {result['margin_over_popularity']:+.3f}.",
        f"LSH: {lsh['recall']:.2f} of each sampled user's {lsh['k']} exact nearest neighbours"
        f" share its bucket (chance: {lsh['chance_recall']:.2f}); {lsh['buckets_in_use']}"
        f" buckets in use, {lsh['mean_users_per_bucket']} users each on average.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.recommendations", description=__doc__)
    parser.parse_args(argv)
    config = settings_module.load_or_exit()
    print(summary(evaluate(config).report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

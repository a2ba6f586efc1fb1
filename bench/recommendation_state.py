"""`make bench-recommendations`: how the recommendation steps' state grows with the stream, on the
benchmark's workloads (bench/workload.py; `new-users` has mostly users seen once or twice).

The profile job's pipeline and recommendation steps run without Flink (bench/in_memory.py, no
models), and every `--every` events the state learn-items would hold is measured: its keys
(items and buckets) and their pickled size, the form Flink keeps them in. The per-user state
(each user's item memory in build-profiles, each user's latest list in rank) grows with the
users by design and is reported apart.

The cost: the same pipeline over the first `--cost-events` events of the default workload with
and without the recommendation steps, alternated `--cost-rounds` times in one process, as events
per second and their ratio. Results: `bench/results/recommendation-state-<run>.json` with the
commit and configuration."""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import time
from pathlib import Path

from bench.in_memory import InMemoryPipeline
from bench.run import RESULTS, run_record, say
from bench.workload import WORKLOADS, read_workload, workload_file
from conf import settings as settings_module
from udfs.events import SourceRef


def measure(pipeline: InMemoryPipeline, events: int, users: set[str]) -> dict:
    steps = pipeline.steps
    items = [k for k in steps.knowledge if k.startswith("i:")]
    state = sum(len(pickle.dumps(k)) for k in steps.knowledge.values())
    shoppers = [u.shopper for u in pipeline.users.values() if u.shopper is not None]
    longest = max((len(k.weights) for k in steps.knowledge.values()), default=0)
    return {
        "events": events,
        "users_seen": len(users),
        "item_keys": len(items),
        "bucket_keys": len(steps.knowledge) - len(items),
        "knowledge_bytes": state,
        "longest_list": longest,
        "catalogue_items": len(steps.ranking.catalogue.items),
        "users_with_lists": len(steps.lists),
        "shopper_bytes_per_user": round(sum(len(pickle.dumps(s)) for s in shoppers) / len(shoppers))
        if shoppers
        else 0,
    }


def run(config, kind: str, users: int, events: int, seed: int, every: int) -> list[dict]:
    records = read_workload(workload_file(config, users, events, seed, kind))
    pipeline = InMemoryPipeline(config, control=[])
    seen: set[str] = set()
    points = []
    started = time.monotonic()
    for offset, (key, raw) in enumerate(records, start=1):
        pipeline.process(raw, SourceRef("state", 0, offset), key)
        seen.add(key)
        if offset % every == 0 or offset == len(records):
            points.append(measure(pipeline, offset, seen))
            p = points[-1]
            say(
                f"{kind}: {offset:,} events, {p['users_seen']:,} users, {p['item_keys']:,} items,"
                f" {p['bucket_keys']} buckets, {p['knowledge_bytes'] / 1e6:.2f} MB"
                f" ({time.monotonic() - started:.0f} s)"
            )
    return points


def events_per_s(config, records, recommending: bool) -> float:
    r = config.recommendations.model_copy(update={"enabled": recommending})
    pipeline = InMemoryPipeline(config.model_copy(update={"recommendations": r}), control=[])
    started = time.perf_counter()
    for offset, (key, raw) in enumerate(records):
        pipeline.process(raw, SourceRef("cost", 0, offset), key)
    return len(records) / (time.perf_counter() - started)


def cost(config, args) -> dict:
    path = workload_file(config, args.users, args.events, args.seed)
    records = read_workload(path)[: args.cost_events]
    rounds = {"with": [], "without": []}
    for _ in range(args.cost_rounds):
        rounds["without"].append(round(events_per_s(config, records, False)))
        rounds["with"].append(round(events_per_s(config, records, True)))
    ratio = statistics.median(rounds["with"]) / statistics.median(rounds["without"])
    say(f"cost: {rounds} events/s; with recommendations x{ratio:.2f}")
    return {"events": len(records), "events_per_s": rounds, "ratio": round(ratio, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.recommendation_state", description=__doc__
    )
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--every", type=int, default=50_000, help="events between measurements")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--cost-events", type=int, default=40_000)
    parser.add_argument("--cost-rounds", type=int, default=2)
    args = parser.parse_args(argv)
    config = settings_module.load_or_exit()
    tag = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    result = run_record(tag, args, config)
    result["workloads"] = {
        kind: run(config, kind, args.users, args.events, args.seed, args.every)
        for kind in args.workloads
    }
    result["cost"] = cost(config, args)
    path = Path(RESULTS) / f"recommendation-state-{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    say(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench-stages`: where an event's time goes in the profile job's Python work, stage by
stage, without Flink: the job's keyed function runs over the benchmark workload with its state
kept as Flink keeps it in thread mode (each value pickled), and each stage's functions are timed
in place (exclusive time: a stage nested in another is not counted twice), after an untimed
pass that gives the rate without the timers' own cost. Besides the times,
the calls that would cross between the JVM and the interpreter in the job (state reads and
writes, map-state calls, timer calls, output records) are counted per event.

Results: `bench/results/stages-<run>.json`, with the commit and the arguments, and a table on
stdout."""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import json
import pickle
import time
from collections import Counter

from bench.run import RESULTS, run_record, say
from bench.workload import read_workload, workload_file
from conf import settings as settings_module

# stage -> the functions whose time is the stage's, as "module:qualified.name"
STAGES = {
    "parse": ["udfs.events:EventParser.parse"],
    "state (pickle)": ["pickle:dumps", "pickle:loads"],
    "state (pack/unpack)": [
        "udfs.profile_state:StateCodec.pack",
        "udfs.profile_state:StateCodec.unpack",
    ],
    "update": [
        "udfs.profile:UserProfile.apply",
        "udfs.profile:UserProfile.close_sessions",
        "udfs.profile:UserProfile.expire_short_term",
    ],
    "derivation": ["udfs.profile:UserProfile.snapshot"],
    "scoring (ONNX)": ["udfs.scoring:OnnxModel.run"],
    "scoring (Python)": ["udfs.user_pipeline:score_user"],
    "decisions and attribution": [
        "udfs.user_pipeline:decide",
        "udfs.user_pipeline:UserPipeline.attribution",
        "udfs.user_pipeline:UserPipeline.store_attribution",
    ],
    "output encoding": [
        "udfs.outputs:Output.record",
        "udfs.outputs:Output.deletion",
        "udfs.outputs:archived",
        "udfs.outputs:dead_letter",
        "udfs.outputs:profile",
        "udfs.outputs:compact",
    ],
    "output rows (Flink)": ["jobs.profile:FlinkOutput.row"],
}


class StageClock:
    """Accumulates the exclusive time of wrapped functions by stage."""

    def __init__(self):
        self.seconds: Counter = Counter()
        self.calls: Counter = Counter()
        self.stack: list[list[float]] = []  # [start, time of nested stages]

    def wrap(self, stage: str, fn):
        clock = self

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            clock.stack.append([time.perf_counter(), 0.0])
            try:
                result = fn(*args, **kwargs)
                if hasattr(result, "__next__"):  # a generator: time it as it is consumed
                    result = list(result)
                return result
            finally:
                start, nested = clock.stack.pop()
                spent = time.perf_counter() - start
                clock.seconds[stage] += spent - nested
                clock.calls[stage] += 1
                if clock.stack:
                    clock.stack[-1][1] += spent

        return timed

    def install(self) -> None:
        for stage, targets in STAGES.items():
            for target in targets:
                module_name, path = target.split(":")
                owner = importlib.import_module(module_name)
                *parents, name = path.split(".")
                for parent in parents:
                    owner = getattr(owner, parent)
                wrapped = self.wrap(stage, getattr(owner, name))
                if isinstance(inspect.getattr_static(owner, name), staticmethod):
                    wrapped = staticmethod(wrapped)
                setattr(owner, name, wrapped)


class Crossings(Counter):
    """Calls that cross between the JVM and the interpreter in the job, by kind."""


class PickledValue:
    """A value state as thread-mode PyFlink keeps it: pickled on write, unpickled on read."""

    def __init__(self, store: dict, key, crossings: Crossings):
        self.store, self.key, self.crossings = store, key, crossings

    def value(self):
        self.crossings["state read"] += 1
        raw = self.store.get(self.key[0])
        return None if raw is None else pickle.loads(raw)

    def update(self, value):
        self.crossings["state write"] += 1
        self.store[self.key[0]] = pickle.dumps(value)

    def clear(self):
        self.crossings["state write"] += 1
        self.store.pop(self.key[0], None)


class KeyedMap:
    def __init__(self, store: dict, key, crossings: Crossings):
        self.store, self.key, self.crossings = store, key, crossings

    def _map(self) -> dict:
        return self.store.setdefault(self.key[0], {})

    def contains(self, k):
        self.crossings["map state"] += 1
        return k in self._map()

    def put(self, k, v):
        self.crossings["map state"] += 1
        self._map()[k] = v

    def remove(self, k):
        self.crossings["map state"] += 1
        del self._map()[k]

    def items(self):
        self.crossings["map state"] += 1
        return list(self._map().items())

    def clear(self):
        self.crossings["map state"] += 1
        self.store.pop(self.key[0], None)


class Timers:
    def __init__(self, crossings: Crossings):
        self.crossings = crossings
        self.watermark = -(2**63)
        self.pending: dict = {}  # (ts, user) -> None

    def current_watermark(self):
        return self.watermark

    def register_event_time_timer(self, ts):
        self.crossings["timer call"] += 1
        self.pending[(ts, self.key[0])] = None

    def delete_event_time_timer(self, ts):
        self.crossings["timer call"] += 1
        self.pending.pop((ts, self.key[0]), None)


class Runtime:
    """Flink's keyed state, timers and metrics for the keyed function, in memory."""

    def __init__(self):
        self.key = [None]
        self.crossings = Crossings()
        self.values: dict = {}
        self.maps: dict = {}
        self.timers = Timers(self.crossings)
        self.timers.key = self.key

    def get_state(self, descriptor):
        return PickledValue(self.values.setdefault(descriptor.name, {}), self.key, self.crossings)

    def get_map_state(self, descriptor):
        return KeyedMap(self.maps.setdefault(descriptor.name, {}), self.key, self.crossings)

    def get_metrics_group(self):
        return self

    def counter(self, name):
        return self

    def gauge(self, name, read):
        pass

    def inc(self, n: int = 1):
        pass

    # the context
    def timer_service(self):
        return self.timers

    def get_broadcast_state(self, descriptor):
        return {}  # nothing restored

    def get_current_key(self):
        return self.key[0]


def run_job_function(config, records: list[tuple[str, bytes]], watermark_every: int) -> dict:
    """The job's keyed function over the records, with watermarks every `watermark_every`
    records (the latest event time less the out-of-orderness) firing due timers."""
    from pyflink.common import Row

    from jobs import profile as job
    from jobs.control import first_records, read_sources, scoring_settings
    from udfs.user_pipeline import PipelineSettings

    settings = PipelineSettings.of(config, scoring_settings(config), False)
    function = job.BuildProfiles(settings, tuple(first_records(read_sources(config))))
    rt = Runtime()
    function.open(rt)
    outputs = 0
    latest = 0
    times = [json.loads(raw).get("ts", 0) for _, raw in records]
    started = time.perf_counter()
    for offset, (user, raw) in enumerate(records):
        rt.key[0] = user
        outputs += sum(1 for _ in function.process_element(Row(raw, "events", 0, offset), rt))
        latest = max(latest, times[offset])
        if offset % watermark_every == watermark_every - 1:
            rt.timers.watermark = latest - config.profile.out_of_orderness_ms
            for ts, key in sorted(k for k in rt.timers.pending if k[0] <= rt.timers.watermark):
                del rt.timers.pending[(ts, key)]
                rt.key[0] = key
                outputs += sum(1 for _ in function.on_timer(ts, rt))
    seconds = time.perf_counter() - started
    rt.crossings["output record"] = outputs
    return {"seconds": seconds, "crossings": dict(rt.crossings)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--measured", type=int, default=20_000, help="events timed")
    parser.add_argument("--watermark-every", type=int, default=200)
    args = parser.parse_args(argv)
    config = settings_module.load_or_exit()
    records = read_workload(workload_file(config, args.users, args.events, args.seed))
    records = records[: args.measured]
    tag = time.strftime("%Y%m%d-%H%M%S")
    say(f"stages: the job's keyed function over {len(records):,} events, untimed")
    plain = run_job_function(config, records, args.watermark_every)
    clock = StageClock()
    clock.install()
    say("stages: again, each stage timed")
    ran = run_job_function(config, records, args.watermark_every)
    events = len(records)
    per_event_us = {s: round(clock.seconds[s] / events * 1e6, 1) for s in STAGES}
    per_event_us["the rest (adapter, timers, de-duplication)"] = round(
        (ran["seconds"] - sum(clock.seconds.values())) / events * 1e6, 1
    )
    total_us = ran["seconds"] / events * 1e6
    result = run_record(tag, args, config) | {
        "events": events,
        "events_per_s": round(events / plain["seconds"]),
        "events_per_s_timed": round(events / ran["seconds"]),
        "per_event_us": per_event_us,
        "total_us": round(total_us, 1),
        "calls_per_event": {s: round(clock.calls[s] / events, 2) for s in STAGES},
        "crossings_per_event": {k: round(v / events, 2) for k, v in ran["crossings"].items()},
    }
    for stage, us in per_event_us.items():
        say(f"{stage:45s} {us:8.1f} us  {us / total_us:6.1%}")
    say(f"{'total':45s} {total_us:8.1f} us")
    say(f"untimed: {result['events_per_s']:,} events/s (the timers' own cost is in the rest)")
    say(f"JVM crossings per event: {result['crossings_per_event']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"stages-{tag}.json"
    path.write_text(json.dumps(result, indent=2))
    say(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

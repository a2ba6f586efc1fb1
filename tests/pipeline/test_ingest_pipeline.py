"""The ingest job on a local Flink MiniCluster with a collection source and collecting sinks."""

import json
import random

import pytest
from pyflink.common import Row, Types

from jobs import ingest
from models.generator import hostile_record
from tests.conftest import TEST_NOW_MS, event_bytes

OUTPUT = Types.TUPLE([Types.STRING(), Types.STRING(), Types.STRING()])


class CollectingSinks:
    """Tags both outputs and unions them, so one execute_and_collect sees everything."""

    def __init__(self):
        self.output = None

    def write(self, archive, dead_letters):
        rows = archive.map(lambda r: ("archive", r.event_id, r.properties), output_type=OUTPUT)
        # Rebalanced so PyFlink does not fuse this map into the uid'd side-output operator.
        letters = dead_letters.rebalance().map(
            lambda r: ("dead", r.key.decode(), json.loads(r.value)["reason"]), output_type=OUTPUT
        )
        self.output = rows.union(letters)


def collection_source(records):
    def source(env):
        rows = [Row(raw, "events", p, o) for raw, p, o in records]
        return env.from_collection(rows, type_info=ingest.RAW_RECORD)

    return source


@pytest.fixture
def env(settings):
    env = ingest.create_environment(settings)
    env.set_parallelism(2)  # parallelism 2 catches keying and routing bugs
    return env


def test_valid_and_malformed_records_are_all_accounted_for(env, settings, small_history):
    rng = random.Random(5)
    bounds = (settings.events.min_ts_ms, TEST_NOW_MS)
    records, expected_reasons = [], {}
    for i, event in enumerate(small_history.events[:1500]):
        records.append((event_bytes(event), i % 4, i))
        if i % 3 == 0:
            raw, reason = hostile_record(rng, event, bounds)
            offset = 100_000 + i
            records.append((raw, i % 4, offset))
            expected_reasons[f"events-{i % 4}-{offset}"] = reason.value
    sinks = CollectingSinks()
    ingest.build_pipeline(env, settings, collection_source(records), sinks)
    with sinks.output.execute_and_collect() as results:
        out = list(results)
    archived = {key: props for kind, key, props in out if kind == "archive"}
    dead = {key: reason for kind, key, reason in out if kind == "dead"}
    assert len(out) == len(records)
    assert set(archived) == {e["event_id"] for e in small_history.events[:1500]}
    assert dead == expected_reasons
    first = small_history.events[0]
    assert json.loads(archived[first["event_id"]]) == {
        k: v
        for k, v in first.items()
        if k not in ("event_id", "user_id", "session_id", "type", "ts", "schema_version")
    }


def test_every_operator_has_a_stable_uid_and_name(env, settings, small_history):
    sinks = CollectingSinks()
    records = [(event_bytes(small_history.events[0]), 0, 0)]
    ingest.build_pipeline(env, settings, collection_source(records), sinks)
    graph = env._generate_stream_graph(clear_transformations=False)
    nodes = {
        node.getOperatorName(): node.getTransformationUID()
        for node in graph.getStreamNodes().toArray()
    }
    assert nodes.get("parse-events") == "parse-events"

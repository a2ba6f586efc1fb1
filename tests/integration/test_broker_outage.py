"""A broker that stops answering for 30 s, and a producer that sends events twice.

The broker process is paused (SIGSTOP) a third of the way through the input and resumed
(SIGCONT) 30 s later: every client's request to it times out meanwhile, as in a network
partition or a broker restarting. The input is published with one event in twenty sent again a
few records later, as a producer retrying after a lost acknowledgement does. The job's Kafka
clients retry, and a request that fails for good restarts the job from its last checkpoint
with growing backoff, until the broker answers. The job drops the second copies by
`event_id`, and its outputs equal those of a failure-free run of the input without them
(tests/integration/exactly_once.py); only the archive's source coordinates differ, since the
two inputs lie at different offsets.

The embedded broker keeps its data in memory only, so a restart that loses no data cannot be
played against it; a pause is the outage it survives. The broker must run on this machine."""

import json
import random
import signal
import time
from datetime import datetime, timedelta

import psutil

from tests.integration.conftest import publish, without_recommendations
from tests.integration.exactly_once import assert_same_outputs, reference_run
from tests.integration.job_process import exit_code, job_process, job_settings, wait_for_share

START_TS_MS = 1_790_812_800_000  # 2026-10-01T00:00:00Z: this test's own stretch of event time
OUTAGE_S = 30
RESEND_RATE = 0.05
SETTLE = timedelta(seconds=5)


def broker_process(settings) -> psutil.Process | None:
    """The local process listening on the broker's port, if any."""
    host, port = settings.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == int(port) and conn.pid:
            return psutil.Process(conn.pid)
    return None


def with_resends(events: list[dict], rng: random.Random) -> list[tuple[str, bytes]]:
    """The events keyed by user, some sent a second time up to five records later."""
    records = [(e["user_id"], json.dumps(e).encode()) for e in events]
    sent = list(records)
    # From the back, so the places of earlier records do not move.
    for i in reversed([i for i in range(len(records)) if rng.random() < RESEND_RATE]):
        sent.insert(i + 1 + rng.randint(0, 5), records[i])
    return sent


def test_the_job_rides_out_a_silent_broker_and_ignores_resent_events(
    reference_outputs, own_outputs, trained, tmp_path, figures
):
    broker = broker_process(own_outputs)
    assert broker is not None, (
        f"no broker process on this machine at {own_outputs.kafka.bootstrap_servers}: "
        "this test pauses the broker, so it needs one it can reach"
    )
    reference = job_settings(reference_outputs, trained, tmp_path / "reference", START_TS_MS)
    outage = job_settings(own_outputs, trained, tmp_path / "outage", START_TS_MS)
    reference, outage = without_recommendations(reference), without_recommendations(outage)
    events, _, _ = reference_run(reference, tmp_path, users=200, seed=909)
    records = with_resends(events, random.Random(909))
    start, stop = publish(outage, records).bounds()

    config_file = tmp_path / "outage.yaml"
    with job_process(outage, config_file, start, stop) as job:
        share = wait_for_share(job.process, outage, start, stop, 0.3)
        broker.send_signal(signal.SIGSTOP)
        down = datetime.now()
        try:
            time.sleep(OUTAGE_S)
        finally:
            broker.send_signal(signal.SIGCONT)
        back = datetime.now()
        assert job.process.poll() is None, "the job gave up during the outage"
        assert exit_code(job.process, config_file, 900) == 0, "the job did not recover"

    # The mechanism, from the job's own log: the job waited for the broker rather than going
    # on without it. No checkpoint completed while the broker was silent (its Kafka clients,
    # and so the operators that feed them, were waiting on it), the checkpoint in progress
    # completed once it answered, and checkpoints went on completing after that.
    completed = job.log.completed_at()
    restarts = [t for t in job.log.restarts() if t >= down]
    # (A checkpoint whose writes were all flushed before the pause may finish just after it.)
    silent = [t for t in completed if down + SETTLE < t < back]
    assert not silent, "a checkpoint completed while the broker was silent"
    waited = [
        (started, ended)
        for started, ended in job.log.checkpoint_spans().values()
        if started < back and ended is not None and ended > back
    ]
    assert waited, "no checkpoint waited for the broker"
    assert len([t for t in completed if t > back]) > len(waited), "no checkpoint after the outage"
    longest = max(ended - started for started, ended in waited).total_seconds()
    figures(
        f"{len(events)} events and {len(records) - len(events)} sent twice; the broker "
        f"paused for {OUTAGE_S} s at {share:.0%} of the input: a checkpoint waited "
        f"{longest:.0f} s for it, {len(restarts)} restarts"
    )
    for line in assert_same_outputs(reference, outage, events, same_offsets=False):
        figures(line)

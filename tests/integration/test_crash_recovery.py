"""Crash recovery: whatever the moment the job dies, every event counts once in the outputs.

The same input goes through the profile job twice, into outputs of each run's own: once without
a failure (the reference), and once killed with SIGKILL (the job's process with its JVM and
MiniCluster, nothing shut down) at random points, at least five times, each time started again
from its latest retained checkpoint with `--restore latest`; the last start runs to the end of
the input. Then its outputs must hold every event exactly once, as the reference's do
(tests/integration/exactly_once.py: equal tables, the same Kafka records with a repeated id only
ever the same record again, no gap in any user's updates).

The input is in event-time order per user, with no late events. Whether an event is late
depends on how far event time has got when it is read, which differs between any two runs,
failure or not; and a user's event that arrives after a later one of the same user may meet a
session timer that the watermark fired earlier in one run than in another. In order, a user's
updates come in the same order in every run: the job fires a user's due timers before the
user's next event (`BuildProfiles.fire_due_timers`)."""

import os
import random
import signal
import time
from pathlib import Path

from tests.integration.exactly_once import assert_same_outputs, reference_run
from tests.integration.job_process import exit_code, job_process, job_settings, wait_for_share

START_TS_MS = 1_782_864_000_000  # 2026-07-01T00:00:00Z: this test's own stretch of event time
KILLS = 5


def crash_repeatedly(settings, config_file: Path, start, stop, kills: int, rng) -> list[str]:
    """Runs the job over the input, killing it `kills` times at random points, and lets the last
    start finish. Each kill waits for the checkpoints to cover a random share of the input
    (rising from kill to kill) and then a random 0-3 s more, so kills fall before, during and
    after checkpoints; a start from the previous kill's checkpoint reprocesses what followed."""
    report = []
    for kill in range(kills):
        restore = ("--restore", "latest") if kill else ()
        target = (kill + rng.random()) / (kills + 1)
        with job_process(settings, config_file, start, None, *restore) as process:
            share = wait_for_share(process, settings, start, stop, target)
            time.sleep(rng.uniform(0, 3))
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        report.append(f"kill {kill + 1}: checkpoints covered {share:.0%} of the input")
    with job_process(settings, config_file, start, stop, "--restore", "latest") as process:
        assert exit_code(process, config_file, 600) == 0, "the last start did not finish"
    return report


def test_outputs_are_exactly_once_across_repeated_crashes(
    reference_outputs, own_outputs, trained, tmp_path, figures
):
    reference = job_settings(reference_outputs, trained, tmp_path / "reference", START_TS_MS)
    crashed = job_settings(own_outputs, trained, tmp_path / "crashed", START_TS_MS)
    events, start, stop = reference_run(reference, tmp_path, users=200, seed=505)
    kills = crash_repeatedly(
        crashed, tmp_path / "crashed.yaml", start, stop, KILLS, random.Random(505)
    )
    figures(f"{len(events)} events; {len(kills)} kills:")
    for line in kills:
        figures(f"  {line}")

    for line in assert_same_outputs(reference, crashed, events):
        figures(line)

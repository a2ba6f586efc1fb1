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
from dataclasses import dataclass
from pathlib import Path

from tests.integration.exactly_once import assert_same_outputs, reference_run
from tests.integration.job_process import exit_code, job_process, job_settings, wait_for_share

START_TS_MS = 1_782_864_000_000  # 2026-07-01T00:00:00Z: this test's own stretch of event time
KILLS = 5


@dataclass
class Start:
    """What one start of the job did, read from its own Flink log."""

    restored_from: Path | None
    records_to_read: int  # from the offsets its source started at to the stop offsets
    completed: Path | None  # the latest checkpoint it completed
    in_progress: Path | None  # the checkpoint it was taking when it was killed


def wait_for_checkpoint_in_progress(job, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while job.log.checkpoint_in_progress() is None:
        assert job.process.poll() is None, "the job ended before a checkpoint began"
        assert time.monotonic() < deadline, "no checkpoint began"
        time.sleep(0.01)


def wait_for_own_checkpoint(job, timeout_s: float = 120) -> None:
    """Until this start has completed a checkpoint: a kill before it would test nothing new
    (the consumer group's committed offsets, which `wait_for_share` reads, may already be the
    previous start's)."""
    deadline = time.monotonic() + timeout_s
    while not job.log.completed():
        assert job.process.poll() is None, "the job ended before its first checkpoint"
        assert time.monotonic() < deadline, "the job completed no checkpoint"
        time.sleep(0.1)


def what_it_did(job, settings, stop, killed: bool = True) -> Start:
    offsets = job.log.starting_offsets(settings.kafka.topics.events.name)
    checkpoints = Path(settings.flink.checkpoint_dir)
    completed, in_progress = job.log.completed(), job.log.checkpoint_in_progress()
    return Start(
        restored_from=job.log.restored_from(),
        records_to_read=sum(stop[p] - offsets[p] for p in stop),
        completed=job.log.checkpoint_path(checkpoints, completed[-1]) if completed else None,
        in_progress=(
            job.log.checkpoint_path(checkpoints, in_progress) if killed and in_progress else None
        ),
    )


def crash_repeatedly(settings, config_file: Path, start, stop, kills: int, rng) -> list[Start]:
    """Runs the job over the input, killing it `kills` times, and lets the last start finish.
    Each kill waits for the checkpoints to cover a random share of the input (rising from kill
    to kill) and for the start to complete a checkpoint of its own; then every other kill waits
    for a checkpoint to begin and lands while it runs, the others land a random 0-3 s later.
    Every start after the first restores the latest checkpoint with `--restore latest`."""
    starts = []
    for kill in range(kills):
        restore = ("--restore", "latest") if kill else ()
        target = (kill + rng.random()) / (kills + 1)
        with job_process(settings, config_file, start, None, *restore) as job:
            wait_for_share(job.process, settings, start, stop, target)
            wait_for_own_checkpoint(job)
            if kill % 2 == 0:
                wait_for_checkpoint_in_progress(job)
            else:
                time.sleep(rng.uniform(0, 3))
            os.killpg(job.process.pid, signal.SIGKILL)
            job.process.wait()
            starts.append(what_it_did(job, settings, stop))
    with job_process(settings, config_file, start, stop, "--restore", "latest") as job:
        assert exit_code(job.process, config_file, 600) == 0, "the last start did not finish"
        starts.append(what_it_did(job, settings, stop, killed=False))
    return starts


def test_outputs_are_exactly_once_across_repeated_crashes(
    reference_outputs, own_outputs, trained, tmp_path, figures
):
    reference = job_settings(reference_outputs, trained, tmp_path / "reference", START_TS_MS)
    crashed = job_settings(own_outputs, trained, tmp_path / "crashed", START_TS_MS)
    events, start, stop = reference_run(reference, tmp_path, users=200, seed=505)
    starts = crash_repeatedly(
        crashed, tmp_path / "crashed.yaml", start, stop, KILLS, random.Random(505)
    )
    whole_input = sum(stop[p] - start[p] for p in stop)
    figures(f"{len(events)} events, {whole_input} records; {KILLS} kills:")
    for n, s in enumerate(starts, 1):
        restored = s.restored_from.name if s.restored_from else "nothing"
        during = f", killed during {s.in_progress.name}" if s.in_progress else ""
        figures(f"  start {n}: restored {restored}, read {s.records_to_read} records{during}")

    # Each start after a kill restores the latest checkpoint completed before the kill (or the
    # one being taken, if it got as far as its metadata), and so reads less than the whole
    # input: state and offsets come back, nothing is recomputed from the start.
    assert starts[0].restored_from is None and starts[0].records_to_read == whole_input
    latest, landed_in_checkpoint = None, 0
    for killed, restarted in zip(starts, starts[1:], strict=False):
        latest = killed.completed or latest
        assert latest is not None, "a start was killed before any checkpoint completed"
        assert restarted.restored_from is not None, "a start after a kill restored nothing"
        assert restarted.restored_from in (latest, killed.in_progress)
        assert restarted.records_to_read < whole_input
        landed_in_checkpoint += killed.in_progress not in (None, restarted.restored_from)
    # A kill in the middle of a checkpoint leaves its Kafka transactions open and its files half
    # written: the restart must fall back to the checkpoint before it.
    assert landed_in_checkpoint, "no kill landed during a checkpoint"

    for line in assert_same_outputs(reference, crashed, events):
        figures(line)

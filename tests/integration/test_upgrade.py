"""Upgrade and rescale: the profile job is stopped with a savepoint (SIGTERM, as a deployment
would) half-way through its input; a new version of its code starts from that savepoint at
parallelism 2 instead of 1 and runs to the end of the input. The new version renames its
operators, adds a metric and prints a line at start (every uid the same), and changes the
stored state: the profile has a new field (in the middle, so every later field moves) and one
field renamed (the old name gone, read through udfs.state_codec.RENAMED), with the schema
recorded as the next version. Its outputs hold every event exactly once, as those of a
reference run without a stop (tests/integration/exactly_once.py).

The input is in event-time order per user with no late events, for the reason given in
test_crash_recovery."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.integration.exactly_once import assert_same_outputs, reference_run
from tests.integration.job_process import (
    ROOT,
    exit_code,
    job_process,
    job_settings,
    wait_for_share,
)
from udfs.state_codec import recorded_schemas

START_TS_MS = 1_785_542_400_000  # 2026-08-01T00:00:00Z: this test's own stretch of event time
NEW_VERSION = "profile job, new version"
# The compatible change: file -> (text in it, its replacement).
CHANGES = {
    "jobs/profile.py": (
        ('.name("build-profiles")', '.name("build-user-profiles")'),
        (
            "self.pipeline = UserPipeline(",
            'self.restarts = metrics.counter("started_from_upgrade")\n'
            "        self.pipeline = UserPipeline(",
        ),
        (
            "def main(argv: list[str] | None = None) -> int:\n",
            f"def main(argv: list[str] | None = None) -> int:\n    print({NEW_VERSION!r})\n",
        ),
    ),
    "udfs/profile.py": (
        (
            "    version: int = 0  # updates applied",
            "    first_purchase_ts: int | None = None\n    version: int = 0  # updates applied",
        ),
        ("    late_events: int = 0", "    overdue_events: int = 0"),
        ("self.late_events += 1", "self.overdue_events += 1"),
        ('"late_events": self.late_events,', '"late_events": self.overdue_events,'),
    ),
    "udfs/state_codec.py": (
        (
            "RENAMED: dict[str, str] = {}",
            'RENAMED: dict[str, str] = {"UserProfile.overdue_events": "late_events"}',
        ),
    ),
}


def new_version(folder: Path) -> Path:
    """A copy of the project's packages with the compatible change made, and the state schema
    of its dataclasses recorded as the next version."""
    for package in ("jobs", "udfs", "conf", "models", "sql"):
        ignored = shutil.ignore_patterns("__pycache__", "artifacts")
        shutil.copytree(ROOT / package, folder / package, ignore=ignored)
    for path, changes in CHANGES.items():
        source = folder / path
        text = source.read_text()
        for old, new in changes:
            assert text.count(old) == 1, f"{path} no longer has {old!r}"
            text = text.replace(old, new)
        source.write_text(text)
    env = {**os.environ, "PYTHONPATH": str(folder)}
    command = [sys.executable, "-m", "udfs.state_codec", "--record"]
    recorded = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout.split()[-1] == str(max(recorded_schemas()) + 1), recorded.stdout
    return folder


def test_a_new_version_at_twice_the_parallelism_resumes_from_a_savepoint_exactly_once(
    reference_outputs, own_outputs, trained, tmp_path, figures
):
    reference = job_settings(reference_outputs, trained, tmp_path / "reference", START_TS_MS)
    upgraded = job_settings(own_outputs, trained, tmp_path / "upgraded", START_TS_MS)
    events, start, stop = reference_run(reference, tmp_path, users=200, seed=606)

    config_file = tmp_path / "upgraded.yaml"
    with job_process(upgraded, config_file, start, None) as job:
        share = wait_for_share(job.process, upgraded, start, stop, 0.5)
        job.process.send_signal(signal.SIGTERM)
        stopped = exit_code(job.process, config_file, 180)
        assert stopped == 0, "the job did not stop with a savepoint"
    scaled = upgraded.flink.model_copy(update={"parallelism": 2})
    upgraded = upgraded.model_copy(update={"flink": scaled})
    code = new_version(tmp_path / "new-version")
    restore = ("--restore", "latest")
    with job_process(upgraded, config_file, start, stop, *restore, code=code) as job:
        assert exit_code(job.process, config_file, 600) == 0, "the new version did not finish"
    assert NEW_VERSION in config_file.with_suffix(".log").read_text(), "the new code ran"

    figures(
        f"{len(events)} events; stopped with a savepoint at {share:.0%} of the input, "
        "resumed by the new version at parallelism 2"
    )
    for line in assert_same_outputs(reference, upgraded, events):
        figures(line)

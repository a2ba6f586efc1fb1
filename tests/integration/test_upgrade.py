"""Upgrade and rescale: the profile job is stopped with a savepoint (SIGTERM, as a deployment
would) half-way through its input; a new version of its code (operators renamed, a metric
added, a line printed at start, every uid the same) starts from that savepoint at parallelism 2
instead of 1 and runs to the end of the input. Its outputs hold every event exactly once, as
those of a reference run without a stop (tests/integration/exactly_once.py).

The input is in event-time order per user with no late events, for the reason given in
test_crash_recovery."""

import shutil
import signal
from pathlib import Path

from tests.integration.exactly_once import assert_same_outputs, reference_run
from tests.integration.job_process import (
    ROOT,
    exit_code,
    job_process,
    job_settings,
    wait_for_share,
)

START_TS_MS = 1_785_542_400_000  # 2026-08-01T00:00:00Z: this test's own stretch of event time
NEW_VERSION = "profile job, new version"
# The compatible change: (text in jobs/profile.py, its replacement).
CHANGES = (
    ('.name("build-profiles")', '.name("build-user-profiles")'),
    (
        'self.duplicates = metrics.counter("duplicate_events")',
        'self.duplicates = metrics.counter("duplicate_events")\n'
        '        self.restarts = metrics.counter("started_from_upgrade")',
    ),
    (
        "def main(argv: list[str] | None = None) -> int:\n",
        f"def main(argv: list[str] | None = None) -> int:\n    print({NEW_VERSION!r})\n",
    ),
)


def new_version(folder: Path) -> Path:
    """A copy of the project's packages with the compatible change made to the profile job."""
    for package in ("jobs", "udfs", "conf", "models", "sql"):
        ignored = shutil.ignore_patterns("__pycache__", "artifacts")
        shutil.copytree(ROOT / package, folder / package, ignore=ignored)
    job = folder / "jobs" / "profile.py"
    text = job.read_text()
    for old, new in CHANGES:
        assert text.count(old) == 1, f"the job no longer has {old!r}"
        text = text.replace(old, new)
    job.write_text(text)
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

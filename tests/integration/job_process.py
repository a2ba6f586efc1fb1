"""The profile job in a process of its own, as a user starts it from the command line: what the
restart and recovery tests stop, kill and start again."""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from jobs import profile, runtime
from tests.integration.flink_log import FlinkLog

ROOT = Path(__file__).resolve().parents[2]


def job_settings(own, trained, checkpoint_dir: Path, start_ts_ms: int):
    """`own` with the trained models, a checkpoint folder and a stretch of event time of a
    test's own."""
    models = own.models.model_copy(update={"directory": str(trained.registry.directory)})
    flink = own.flink.model_copy(update={"checkpoint_dir": str(checkpoint_dir)})
    generator = own.generator.model_copy(update={"start_ts_ms": start_ts_ms})
    return own.model_copy(update={"models": models, "flink": flink, "generator": generator})


@dataclass(frozen=True)
class Job:
    process: subprocess.Popen
    log: FlinkLog  # this start's own Flink log


@contextmanager
def job_process(settings, config_file: Path, start, stop, *extra: str, code: Path = ROOT):
    """The profile job in a process of its own (its own JVM and MiniCluster), configured by a
    file as `BEHAVIOR_CONFIG`; killed if it is still running when the block ends. A fresh
    process is what a restart is: the planner numbers the operators it generates from zero in
    each process, and a restore needs the same numbers. Its output goes to `<config>.log`, its
    Flink log to a folder of this start's own (`<config>.flink-<n>/`).
    `code`: the folder its packages are imported from (another version of them)."""
    dumped = settings.model_dump(mode="json")
    key_file = settings.privacy.pseudonym_key_file
    if key_file:  # the same key (the same pseudonyms) whatever folder the code runs from
        dumped["privacy"]["pseudonym_key_file"] = str(Path(key_file).resolve())
    config_file.write_text(yaml.safe_dump(dumped))
    command = [sys.executable, "-m", "jobs.profile"]
    command += ["--start-offsets", runtime.format_offsets(start), *extra]
    if stop is not None:
        command += ["--stop-offsets", runtime.format_offsets(stop)]
    starts = len(list(config_file.parent.glob(f"{config_file.stem}.flink-*")))
    log_dir = config_file.parent / f"{config_file.stem}.flink-{starts + 1}"
    log_dir.mkdir()
    env = {
        **os.environ,
        "BEHAVIOR_CONFIG": str(config_file),
        "PYTHONPATH": str(code),
        "FLINK_LOG_DIR": str(log_dir),
    }
    with config_file.with_suffix(".log").open("a") as log:
        process = subprocess.Popen(
            command, cwd=code, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield Job(process, FlinkLog(log_dir))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def exit_code(process, config_file: Path, timeout_s: float) -> int:
    """The job's exit code; fails with the end of its output when it runs past the timeout."""
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        tail = config_file.with_suffix(".log").read_text(errors="replace").splitlines()[-40:]
        ended = "\n".join(tail)
        pytest.fail(f"the job still ran after {timeout_s:.0f} s; its output ended:\n{ended}")


def committed_share(settings, start: dict[int, int], stop: dict[int, int]) -> float:
    """How much of the input the job's latest checkpoint covers (0..1)."""
    committed = runtime.committed_offsets(settings, profile.SOURCE_GROUP)
    done = sum((committed[p] or start[p]) - start[p] for p in stop)
    return done / sum(stop[p] - start[p] for p in stop)


def wait_for_share(process, settings, start, stop, target: float, timeout_s: float = 300) -> float:
    """Waits while the job runs until its checkpoints cover `target` of the input (0..1);
    returns the share they cover."""
    deadline = time.monotonic() + timeout_s
    while (share := committed_share(settings, start, stop)) < target:
        assert process.poll() is None, f"the job ended before reading {target:.0%} of its input"
        assert time.monotonic() < deadline, f"the job did not read {target:.0%} of its input"
        time.sleep(0.2)
    return share

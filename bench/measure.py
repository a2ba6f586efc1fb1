"""What the benchmark measures while a contender runs in its own process: how far its consumer
group has committed through the input (the same yardstick for every contender) and the memory
of its process tree, sampled twice a second; and afterwards the checkpoints Flink logged."""

from __future__ import annotations

import contextlib
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from kafka import KafkaConsumer, TopicPartition

from jobs.progress import Progress
from jobs.publish import iter_topic

CHECKPOINT_LINE = re.compile(
    r"Completed checkpoint (\d+) for job \w+ \((\d+) bytes, checkpointDuration=(\d+) ms"
)


@dataclass
class Sample:
    t: float  # seconds since the contender started
    consumed: int  # input records its group committed past
    rss_bytes: int  # resident memory of its process tree


@dataclass
class Run:
    name: str
    events: int
    samples: list[Sample] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def peak_rss_bytes(self) -> int:
        return max((s.rss_bytes for s in self.samples), default=0)

    # Kafka timestamps (ms) of the first and last record the contender wrote to its output.
    first_output_ms: int | None = None
    last_output_ms: int | None = None
    outputs: int = 0

    def sustained_rate(self) -> float:
        """Input events per second between the contender's first and last output record:
        start-up, the idle end and commit latency excluded. (Committed offsets lag by a whole
        checkpoint in Flink, under backpressure by tens of seconds, so they only draw the
        progress curve.)"""
        if self.first_output_ms is None or self.last_output_ms <= self.first_output_ms:
            return 0.0
        return self.events / ((self.last_output_ms - self.first_output_ms) / 1000)

    def summary(self) -> dict:
        return {
            "events": self.events,
            "wall_s": round(self.wall_s, 1),
            "events_per_s": round(self.sustained_rate()),
            "outputs": self.outputs,
            "peak_rss_mb": round(self.peak_rss_bytes / 2**20),
            "progress": [
                (round(s.t, 1), s.consumed)
                for s in self.samples[:: max(1, len(self.samples) // 200)]
            ],
        }


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def task_managers() -> list[psutil.Process]:
    """The standalone cluster's task managers (their Python workers are their children)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any("TaskManagerRunner" in part for part in process.info["cmdline"] or ()):
            found.append(process)
    return found


def run_measured(
    name: str,
    command: list[str],
    env: dict,
    bootstrap: str,
    group: str,
    start: dict[int, int],
    topic: str,
    output: str,
    events: int,
    timeout_s: float,
    log: Path,
    memory_of: Callable[[], list[psutil.Process]] | None = None,
) -> Run:
    """Runs a contender to its end, sampling its committed progress and its memory (of its
    process tree, or of the processes `memory_of` finds, with theirs); then reads the span of
    its output topic."""
    run = Run(name, events)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    partitions = {p: TopicPartition(topic, p) for p in start}
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    watched = psutil.Process(process.pid)
    stop = threading.Event()

    def sample() -> None:
        progress = Progress(f"[bench] {name}", events, "events", every_s=15)
        while not stop.wait(0.5):
            committed = {p: consumer.committed(tp) for p, tp in partitions.items()}
            consumed = sum(max((committed[p] or 0) - start[p], 0) for p in partitions)
            rss = 0
            for process in memory_of() if memory_of else [watched]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    rss += tree_rss(process)
            t = time.monotonic() - started
            run.samples.append(Sample(t, consumed, rss))
            progress.update(max(consumed - progress.done, 0))
        progress.close()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        code = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise SystemExit(f"[bench] {name} ran past {timeout_s:.0f} s; its output: {log}") from None
    finally:
        run.wall_s = time.monotonic() - started
        stop.set()
        sampler.join()
        consumer.close()
    if code != 0:
        raise SystemExit(f"[bench] {name} failed (exit {code}); its output: {log}")
    run.outputs, run.first_output_ms, run.last_output_ms = output_span(bootstrap, output)
    return run


def output_span(bootstrap: str, topic: str) -> tuple[int, int | None, int | None]:
    """(records, first timestamp, last timestamp) of a topic, aborted records included: the
    embedded broker shows them to every reader, and they were work done."""
    count, first, last = 0, None, None
    records = iter_topic(
        bootstrap, topic, "read_uncommitted", idle_timeout_s=8, fetch_max_bytes=32 * 2**20
    )
    for record in records:
        count += 1
        first = record.timestamp if first is None else min(first, record.timestamp)
        last = record.timestamp if last is None else max(last, record.timestamp)
    return count, first, last


def checkpoints(flink_log: Path) -> dict:
    """Durations and sizes of the checkpoints a Flink run logged."""
    found = [
        (int(m.group(2)), int(m.group(3)))
        for m in CHECKPOINT_LINE.finditer(flink_log.read_text(errors="replace"))
    ]
    if not found:
        return {"count": 0}
    sizes, durations = zip(*found, strict=True)
    return {
        "count": len(found),
        "duration_ms_median": statistics.median(durations),
        "duration_ms_max": max(durations),
        "size_bytes_last": sizes[-1],
        "size_bytes_max": max(sizes),
    }

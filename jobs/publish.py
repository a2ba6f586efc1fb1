"""Publishing to Kafka with the offsets of what was written, so a bounded run can read it back,
and reading a topic back whole.

Offsets come from the broker's answers to our own sends and fetches, never from a ListOffsets
request: the local broker answers those wrongly at times (README, "The local broker").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from jobs.progress import Progress


@dataclass
class PublishReport:
    topic: str
    partitions: int
    sent: int = 0
    start_offsets: dict[int, int] = field(default_factory=dict)  # first offset written
    end_offsets: dict[int, int] = field(default_factory=dict)  # one past the last offset written

    def bounds(self) -> tuple[dict[int, int], dict[int, int]]:
        """(start, stop) for every partition; a partition we did not write to reads nothing."""
        start = {p: self.start_offsets.get(p, 0) for p in range(self.partitions)}
        stop = {p: self.end_offsets.get(p, 0) for p in range(self.partitions)}
        return start, stop

    def contains(self, partition: int, offset: int) -> bool:
        return self.start_offsets.get(partition, 0) <= offset < self.end_offsets.get(partition, 0)

    def to_json(self) -> dict:
        return {
            "topic": self.topic,
            "partitions": self.partitions,
            "sent": self.sent,
            "start_offsets": self.start_offsets,
            "end_offsets": self.end_offsets,
        }

    @staticmethod
    def from_json(d: dict) -> PublishReport:
        def ints(m: dict) -> dict[int, int]:
            return {int(k): int(v) for k, v in m.items()}

        return PublishReport(
            d["topic"], d["partitions"], d["sent"], ints(d["start_offsets"]), ints(d["end_offsets"])
        )


class Publisher:
    """Sends records keyed by user, at an optional rate, showing its progress (jobs/progress.py)."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        partitions: int,
        rate: float = 0.0,
        label: str = "publish",
        total: int | None = None,
        show_progress: bool = True,
    ):
        """`total`: the records to come, if known (the progress's ETA); `show_progress`: off
        when the caller shows the progress of its own work."""
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            linger_ms=20,
            batch_size=256 * 1024,
            max_request_size=2 * 1024 * 1024,
        )
        self.report = PublishReport(topic, partitions)
        self._rate = rate
        self._progress = Progress(f"[{label}]", total, "records") if show_progress else None
        self._lock = threading.Lock()
        self._errors: list[Exception] = []
        self._started = time.monotonic()

    def _on_sent(self, metadata) -> None:
        with self._lock:
            p, o = metadata.partition, metadata.offset
            self.report.start_offsets[p] = min(self.report.start_offsets.get(p, o), o)
            self.report.end_offsets[p] = max(self.report.end_offsets.get(p, 0), o + 1)

    def _on_error(self, exc: Exception) -> None:
        with self._lock:
            self._errors.append(exc)

    def send(self, key: str | None, value: bytes) -> None:
        future = self._producer.send(
            self.report.topic, key=key.encode() if key is not None else None, value=value
        )
        future.add_callback(self._on_sent).add_errback(self._on_error)
        self.report.sent += 1
        n = self.report.sent
        if self._rate:
            ahead = n / self._rate - (time.monotonic() - self._started)
            if ahead > 0:
                time.sleep(ahead)
        if self._progress is not None:
            self._progress.update()

    def flush(self) -> None:
        """Waits until everything sent so far is acknowledged."""
        self._producer.flush()

    def close(self) -> PublishReport:
        self._producer.flush()
        self._producer.close()
        if self._progress is not None:
            self._progress.close()
        if self._errors:
            raise RuntimeError(
                f"{len(self._errors)} records were not acknowledged: {self._errors[0]}"
            )
        return self.report


def iter_topic(
    bootstrap_servers: str,
    topic: str,
    isolation: str = "read_committed",
    idle_timeout_s: float = 15.0,
    **options,
) -> Iterator[ConsumerRecord]:
    """Every record of a topic that a reader with this isolation level gets, in offset order per
    partition. The end is `idle_timeout_s` without a record, since end offsets are not trusted.
    Each partition is read from offset 0 rather than from the first offset the broker names (the
    local broker has named a later one); where old records were deleted, offset 0 is out of
    range and the reader starts at the earliest one left."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        isolation_level=isolation,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=int(idle_timeout_s * 1000),
        **options,
    )
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        for partition in partitions:
            consumer.seek(partition, 0)
        yield from consumer
    finally:
        consumer.close()

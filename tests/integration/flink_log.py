"""What a job's own Flink log says happened: checkpoints triggered and completed, the snapshot a
start restored, the offsets its Kafka source started from, restarts and failed writes. The
recovery and outage tests assert the mechanism they claim from it, not from sleeps."""

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) +\w+ +\S+ +\S* *- (.*)$")
TRIGGERED = re.compile(r"Triggering checkpoint (\d+) .* for job (\w+)\.")
COMPLETED = re.compile(r"Completed checkpoint (\d+) for job (\w+) ")
# A start from a checkpoint or savepoint (`--restore`); Flink's own restarts log other lines.
STARTED_FROM = re.compile(r"Starting job \w+ from savepoint (\S+) ")
SPLIT = re.compile(r"Partition: ([^,]+)-(\d+), StartingOffset: (-?\d+)")
RESTARTING = re.compile(r"Job .* switched from state \w+ to RESTARTING\.")
# A JDBC sink's batch that failed, or a (restarted) JDBC sink that could not connect at all.
JDBC_FAILURE = re.compile(r"JDBC executeBatch error|unable to open JDBC writer")


@dataclass(frozen=True)
class Entry:
    at: datetime
    message: str


class FlinkLog:
    """The log of one start of a job: the folder given to it as FLINK_LOG_DIR."""

    def __init__(self, folder: Path):
        self.folder = folder

    def entries(self) -> list[Entry]:
        """Every logged message, with the lines that follow it (an exception) as part of it."""
        out: list[Entry] = []
        for path in sorted(self.folder.glob("flink-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if m := LINE.match(line):
                    at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
                    out.append(Entry(at, m.group(2)))
                elif out:
                    out[-1] = Entry(out[-1].at, f"{out[-1].message}\n{line}")
        return out

    def matching(self, pattern: re.Pattern) -> list[tuple[Entry, re.Match]]:
        return [(e, m) for e in self.entries() if (m := pattern.search(e.message))]

    def completed(self) -> list[int]:
        return [int(m.group(1)) for _, m in self.matching(COMPLETED)]

    def checkpoint_in_progress(self) -> int | None:
        """The latest triggered checkpoint if it has not completed yet."""
        spans = self.checkpoint_spans()
        latest = max(spans, default=None)
        return latest if latest is not None and spans[latest][1] is None else None

    def checkpoint_path(self, checkpoint_dir: Path, checkpoint: int) -> Path:
        """Where one of this start's checkpoints lies: <checkpoint dir>/<job id>/chk-<n>."""
        _, m = self.matching(TRIGGERED)[0]
        return checkpoint_dir / m.group(2) / f"chk-{checkpoint}"

    def restored_from(self) -> Path | None:
        """The checkpoint or savepoint this start was told to restore."""
        found = self.matching(STARTED_FROM)
        return Path(found[0][1].group(1).removeprefix("file:")) if found else None

    def starting_offsets(self, topic: str) -> dict[int, int]:
        """Partition -> the offset the source's reader started from (the first assignment)."""
        offsets: dict[int, int] = {}
        for entry in self.entries():
            for m in SPLIT.finditer(entry.message):
                if m.group(1) == topic:
                    offsets.setdefault(int(m.group(2)), int(m.group(3)))
        return offsets

    def restarts(self) -> list[datetime]:
        return [e.at for e, _ in self.matching(RESTARTING)]

    def failed_writes(self) -> list[datetime]:
        """When the JDBC sinks failed to write a batch or to connect."""
        return [e.at for e, _ in self.matching(JDBC_FAILURE)]

    def completed_at(self) -> list[datetime]:
        return [e.at for e, _ in self.matching(COMPLETED)]

    def checkpoint_spans(self) -> dict[int, tuple[datetime, datetime | None]]:
        """Checkpoint -> (when it was triggered, when it completed or None)."""
        done = {int(m.group(1)): e.at for e, m in self.matching(COMPLETED)}
        return {
            int(m.group(1)): (e.at, done.get(int(m.group(1)))) for e, m in self.matching(TRIGGERED)
        }

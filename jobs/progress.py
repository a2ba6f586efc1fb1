"""Progress of long work (generation, replay, training, the benchmark): a bar with its rate and
ETA on a terminal (tqdm), and on anything else (CI logs, a pipe) a plain line at most every
`every_s` seconds and one at the end, so logs stay readable."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


class Progress:
    def __init__(
        self,
        label: str,
        total: int | None = None,
        unit: str = "events",
        stream: TextIO | None = None,
        every_s: float = 10.0,
    ):
        """`label`: the work, as log lines start (`[replay]`); `total`: None when unknown."""
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.done, self.every_s = 0, every_s
        self.started = self.last_line = time.monotonic()
        self.bar = None
        if self.stream.isatty():
            self.bar = tqdm(
                total=total, desc=label, unit=f" {unit}", unit_scale=True, file=self.stream
            )

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last_line >= self.every_s:
            self.last_line = now
            self._line(now)

    def _line(self, now: float, final: bool = False) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            share = f" of {self.total:,} ({self.done / self.total:.0%})"
            left = (self.total - self.done) / rate if rate > 0 and not final else None
        else:
            share, left = "", None
        eta = f", about {left:,.0f} s left" if left is not None else ""
        verb = "done:" if final else ""
        print(
            f"{self.label} {verb}{' ' if verb else ''}{self.done:,}{share} {self.unit}"
            f" in {elapsed:,.0f} s ({rate:,.0f}/s){eta}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            self._line(time.monotonic(), final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Progress of long work (bootstrap replicates, study fits).

A rich bar in a terminal, plain lines in a log (CI, Slurm, nohup), nothing for short runs.
"""

from __future__ import annotations

import sys
import time
from typing import Any

# In a log (stderr not a terminal) a progress line at most every PLAIN_EVERY_SECONDS and only after
# another PLAIN_EVERY_FRACTION of the work is done: whichever comes later.
PLAIN_EVERY_SECONDS = 10.0
PLAIN_EVERY_FRACTION = 0.1


def _duration(seconds: float) -> str:
    """``12 s``, ``3 min 20 s``, ``1 h 05 min``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class ProgressBar:
    """Progress on stderr: a rich bar in a terminal, plain lines in a log, or nothing.

    ``show=None`` shows the bar in a terminal and nothing elsewhere; ``show=True`` also writes,
    when stderr is not a terminal (CI, Slurm, nohup), a line such as ``bootstrap: 300/1000
    replicates, 12 s elapsed, about 28 s left`` every `PLAIN_EVERY_SECONDS` or every
    `PLAIN_EVERY_FRACTION` of the work, whichever comes later, and a last line at the end if it
    wrote any. `describe` names the current stage (``size 50``) in both.
    """

    def __init__(
        self, show: bool | None, total: int, label: str, *, unit: str = "replicates"
    ) -> None:
        tty = sys.stderr.isatty()
        if show is False or total <= 0:
            self.mode = "off"
        else:
            self.mode = "bar" if tty else "plain" if show else "off"
        self.total = total
        self.label = label
        self.unit = unit
        self.stage = ""
        self.done = 0
        self._start = self._last_time = time.perf_counter()
        self._last_done = 0
        self._lines = 0
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressBar:
        self._start = self._last_time = time.perf_counter()
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self._description(), total=self.total)
        return self

    def _description(self) -> str:
        return f"{self.label}: {self.stage}" if self.stage else self.label

    def describe(self, stage: str) -> None:
        """Name the current stage of the work (shown before the counts)."""
        self.stage = stage
        if self._progress is not None:
            self._progress.update(self._task, description=self._description())

    def advance(self, n: int) -> None:
        """Count ``n`` more units done."""
        self.done += n
        if self._progress is not None:
            self._progress.update(self._task, advance=n)
        elif self.mode == "plain" and self.done < self.total:
            now = time.perf_counter()
            if (
                now - self._last_time >= PLAIN_EVERY_SECONDS
                and self.done - self._last_done >= PLAIN_EVERY_FRACTION * self.total
            ):
                self._last_time, self._last_done = now, self.done
                elapsed = now - self._start
                left = elapsed / self.done * (self.total - self.done)
                self._line(
                    f"{self.done:,}/{self.total:,} {self.unit}, {_duration(elapsed)} elapsed, "
                    f"about {_duration(left)} left"
                )

    def _line(self, text: str) -> None:
        stage = f"{self.stage}, " if self.stage else ""
        print(f"{self.label}: {stage}{text}", file=sys.stderr, flush=True)
        self._lines += 1

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
        elif self.mode == "plain" and self._lines and exc[0] is None:
            self.stage = ""
            elapsed = time.perf_counter() - self._start
            self._line(f"{self.done:,}/{self.total:,} {self.unit} done in {_duration(elapsed)}")

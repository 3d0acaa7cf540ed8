"""Progress of long work: rich progress bars on a terminal; without one (a log file, CI, a
service) a log line every LOG_EVERY_S seconds; nothing under ESM_PROGRESS=0."""
from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

from .config import progress_from_env

__all__ = ["enabled", "LOG_EVERY_S", "progress_iter"]

T = TypeVar("T")
log = logging.getLogger("es_metric.progress")
LOG_EVERY_S = 30.0


def enabled() -> bool:
    """Whether progress bars are drawn (ESM_PROGRESS, else: stderr is a terminal)."""
    flag = progress_from_env()
    return sys.stderr.isatty() if flag is None else flag


def progress_iter(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    flag = progress_from_env()
    if flag is False:                      # asked for silence
        yield from items
        return
    if not (flag or sys.stderr.isatty()):  # no terminal to draw on: log lines
        yield from _logged(items, desc, total)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, transient=False, console=Console(stderr=True)) as bar:
        task = bar.add_task(desc, total=total)
        for item in items:
            yield item
            bar.advance(task)


def _logged(items: Iterable[T], desc: str, total: int | None) -> Iterator[T]:
    """``items``, with an INFO line every LOG_EVERY_S seconds: how many, and the time left."""
    start = last = time.monotonic()
    for done, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= LOG_EVERY_S:
            last = now
            log.info("%s: %s", desc, status(done, total, now - start))


def status(done: int, total: int | None, elapsed: float) -> str:
    """"1,200 of 3,451 (35 %), about 4 min left" (or "1,200 done, 2 min so far")."""
    if not total:
        return f"{done:,} done, {_duration(elapsed)} so far"
    left = elapsed / done * max(total - done, 0)
    return f"{done:,} of {total:,} ({100 * done // total} %), about {_duration(left)} left"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"

"""Progress bars (rich) for long work; silent when ESM_PROGRESS=0 or output is not a terminal."""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

from .config import progress_from_env

__all__ = ["enabled", "progress_iter"]

T = TypeVar("T")


def enabled() -> bool:
    flag = progress_from_env()
    return sys.stderr.isatty() if flag is None else flag


def progress_iter(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    if not enabled():
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, transient=False, console=Console(stderr=True)) as bar:
        task = bar.add_task(desc, total=total)
        for item in items:
            yield item
            bar.advance(task)

"""Rich progress bars (to stderr, so stdout stays clean for summaries and pipes)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`. Disabled with ATMANRL_NO_PROGRESS=1 (tests, logs)."""
    if os.environ.get("ATMANRL_NO_PROGRESS") == "1":
        yield lambda n=1: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as p:
        tid = p.add_task(description, total=total)
        yield lambda n=1: p.advance(tid, n)

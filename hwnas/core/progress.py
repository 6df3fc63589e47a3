"""The one progress bar of hwnas (rich): description, bar, done/total, elapsed, ETA, and optionally a
status text that a long job updates (``task.fields["status"]``)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(enabled: bool, status: bool = False) -> Progress:
    """A bar that prints nothing when ``enabled`` is False; with ``status``, tasks carry a ``status`` field."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn()]  # fmt: skip
    if status:
        columns.append(TextColumn("{task.fields[status]}"))
    # The console keeps the stdout of now: converters' prints silenced later (hwnas.core.quiet) do not hide the bar.
    return Progress(*columns, disable=not enabled, transient=False, console=Console(file=sys.stdout))

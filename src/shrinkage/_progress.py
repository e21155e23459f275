"""Progress bars that stay quiet in tests and when stderr is not a terminal."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class _Bar:
    def __init__(self, progress, task) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def grow(self, n: int = 1) -> None:
        """The total turned out larger (a path extended past its grid)."""
        if self._progress is not None:
            total = self._progress.tasks[self._task].total or 0
            self._progress.update(self._task, total=total + n)


@contextlib.contextmanager
def progress_bar(total: int, description: str, *, enabled: bool | None = None) -> Iterator[_Bar]:
    """A rich progress bar over ``total`` units; ``enabled=None`` means "if a terminal"."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield _Bar(None, None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield _Bar(progress, progress.add_task(description, total=total))


@contextlib.contextmanager
def counted_on(bar: _Bar, total: int) -> Iterator[_Bar]:
    """``bar`` (a caller's) grown by ``total`` more units, for a part of its work that
    counts its own: as :func:`progress_bar`, without a second bar on the screen."""
    bar.grow(total)
    yield bar

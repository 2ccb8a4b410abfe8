"""Progress display on stderr, so stdout stays clean for --json."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

stderr = Console(stderr=True)


@contextlib.contextmanager
def progress_bar(description: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """Yield `update(done, total)`; shows a bar (or a spinner before the total is known) on a terminal."""
    if not (enabled and stderr.is_terminal):
        yield lambda done, total: None
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total}"), TimeElapsedColumn(), console=stderr, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@contextlib.contextmanager
def spinner(description: str, enabled: bool = True) -> Iterator[None]:
    if not (enabled and stderr.is_terminal):
        yield
        return
    with stderr.status(description):
        yield

"""Progress bars (rich), on stderr (stdout stays clean for data a command prints), silent when
disabled or when stderr is not attached to a terminal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: list[T], description: str, enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a transient rich progress bar."""
    if not enabled or len(items) <= 1:
        yield from items
        return
    from rich.console import Console
    from rich.progress import track

    console = Console(stderr=True)
    yield from track(items, description=description, transient=True, console=console)

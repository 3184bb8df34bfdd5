"""Progress bars (rich), silent when disabled or when not attached to a terminal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: list[T], description: str, enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a transient rich progress bar."""
    if not enabled or len(items) <= 1:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=description, transient=True)

"""Keep Textual's compositor from turning every painted line into cyclic garbage.

The compositor cuts each line a widget renders at the edges of what covers it
(`Strip.divide`). A line that needs no cut (the usual case: nothing overlaps it) comes back as
`[self]`, and Textual 8.2 keeps that list in the strip's own divide cache: the strip refers to
itself. Reference counting can then never free it; only the collector can, and by the time it
does the strip has lived long enough to reach the oldest generation. With 5,000 streams and a
repaint every 250 ms that was a strip, its seven caches and its segments per painted line:
about 4,000 objects a second kept for the collector's full passes, which then took up to 140 ms
each and held keys back on screen (`python -m benchmarks --only ui`).

`install()` makes that one case return a fresh `[self]` without caching it (every other cut is
unchanged and still cached). Idempotent; done when the UI is imported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence

from textual.strip import Strip

_MARK = "_kline_tui_no_self_cycle"


def install() -> None:
    original: Callable[[Strip, Iterable[int]], Sequence[Strip]] = Strip.divide
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def divide(self: Strip, cuts: Iterable[int]) -> Sequence[Strip]:
        cell_length = self.cell_length
        kept = [cut for cut in cuts if cut <= cell_length]
        if kept == [cell_length]:
            return [self]
        return original(self, kept)

    setattr(divide, _MARK, True)
    Strip.divide = divide  # type: ignore[method-assign]

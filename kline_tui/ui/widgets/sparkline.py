"""Sparklines in unicode blocks: a row of closes squeezed into a few cells."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["BLOCKS", "sparkline"]

BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int) -> str:
    """`values` in `width` cells, newest on the right; older cells blank while history is short.

    With more values than cells, each cell shows the last value of its slice, so the line ends
    on the newest close.
    """
    if width <= 0:
        return ""
    n = len(values)
    if n == 0:
        return " " * width
    if n > width:
        values = [values[(i + 1) * n // width - 1] for i in range(width)]
    lo, hi = min(values), max(values)
    if hi <= lo:
        return (BLOCKS[0] * len(values)).rjust(width)
    scale = (len(BLOCKS) - 1) / (hi - lo)
    return "".join(BLOCKS[round((v - lo) * scale)] for v in values).rjust(width)

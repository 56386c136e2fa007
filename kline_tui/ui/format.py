"""How numbers, times and durations read on screen: fixed widths, no surprises."""

from __future__ import annotations

import math
import time
from pathlib import Path

__all__ = [
    "candle_time",
    "change_pct",
    "clock_time",
    "compact",
    "count4",
    "duration",
    "kind_tag",
    "price",
    "short_path",
]


def price(value: float | None) -> str:
    """A price with as many decimals as its size needs (67432.10, 3.5120, 0.0012345)."""
    if value is None or not math.isfinite(value):
        return "—"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:.2f}"
    if magnitude >= 10:
        return f"{value:.3f}"
    if magnitude >= 1:
        return f"{value:.4f}"
    if magnitude >= 0.01:
        return f"{value:.5f}"
    if magnitude == 0:
        return "0"
    return f"{value:.8f}"


def change_pct(now: float | None, then: float | None) -> tuple[str, int]:
    """The change from `then` to `now` as `+1.23%`, and its sign (-1, 0, 1): a percent of
    `then`'s magnitude, so a negative series (a premium index) that rises shows a rise."""
    if now is None or not then:
        return "—", 0
    pct = (now - then) / abs(then) * 100.0
    if abs(pct) < 0.005:
        return "0.00%", 0
    return f"{pct:+.2f}%", (1 if pct > 0 else -1)


_UNITS = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))


def compact(value: float | int | None, decimals: int = 2) -> str:
    """A count or volume in at most ~8 characters: 987, 12.35K, 4.20M."""
    if value is None:
        return "—"
    magnitude = abs(value)
    for size, unit in _UNITS:
        if magnitude >= size:
            return f"{value / size:.{decimals}f}{unit}"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.{decimals}f}"


def count4(value: int) -> str:
    """A count in at most four characters, for cells that must never be cut: 999, 1.2K, 12K,
    123K, 1.2M."""
    magnitude = abs(value)
    if magnitude < 1000:
        return str(value)
    for size, unit in _UNITS:
        if magnitude >= size:
            scaled = value / size
            if abs(scaled) < 9.95:
                return f"{scaled:.1f}{unit}"
            if abs(scaled) < 999.5:
                return f"{scaled:.0f}{unit}"
            return f"{value / 1e12:.0f}T" if size == 1e12 else f"1{_NEXT_UNIT[unit]}"
    return str(value)


_NEXT_UNIT = {"B": "T", "M": "B", "K": "M"}
# A kind after the symbol in a cell: short, since the symbol column is narrow.
_KIND_TAGS = {
    "mark": "mark",
    "index": "idx",
    "premium": "prem",
    "perpetual": "perp",
    "current_quarter": "cq",
    "next_quarter": "nq",
}


def kind_tag(kind: str) -> str:
    """A kline kind as a short tag after the symbol (`mark`, `perp`); empty for trade klines."""
    return _KIND_TAGS.get(kind, "")


def duration(seconds: float | None) -> str:
    """A span of time at a glance: 45 s, 3m12s, 2h05m, 3d04h."""
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def clock_time(wall: float) -> str:
    """Local wall-clock time of day, for the event log."""
    return time.strftime("%H:%M:%S", time.localtime(wall))


def candle_time(open_time_ms: int, interval_ms: int | None) -> str:
    """A candle's open time in UTC, as precise as its interval needs."""
    t = time.gmtime(open_time_ms / 1000)
    if interval_ms is not None and interval_ms < 60_000:
        return time.strftime("%H:%M:%S", t)
    if interval_ms is not None and interval_ms < 86_400_000:
        return time.strftime("%m-%d %H:%M", t)
    return time.strftime("%Y-%m-%d", t)


def short_path(path: Path | str) -> str:
    """A path with the home folder written `~`."""
    text = str(path)
    home = str(Path.home())
    if home and home != "/" and (text == home or text.startswith(home + "/")):
        return "~" + text[len(home) :]
    return text

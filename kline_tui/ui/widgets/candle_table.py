"""The recent closed candles of one stream, newest first, in a DataTable."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.reactive import var
from textual.widgets import DataTable

from kline_tui.model import Candle, Interval
from kline_tui.ui import format as fmt

__all__ = ["CandleTable"]

_COLUMNS = (
    ("Open time", 14),
    ("Open", 12),
    ("High", 12),
    ("Low", 12),
    ("Close", 12),
    ("Change", 8),
    ("Volume", 10),
    ("Trades", 8),
)


class CandleTable(DataTable):
    """Open time (UTC), prices, change, volume and trades of each closed candle.

    `show()` sets `candles`; the rows are rebuilt only when they changed (a candle closed, or
    another stream is shown), so the app may call it at every repaint.
    """

    candles: var[tuple[Candle, ...]] = var(tuple, init=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        # Not reactive: another stream's interval comes with other candles, which redraw.
        self.interval = Interval.M1

    def on_mount(self) -> None:
        for label, width in _COLUMNS:
            self.add_column(label, width=width, key=label)
        self._fill()

    def show(self, closed: Sequence[Candle], interval: Interval) -> None:
        """Show these closed candles (oldest first) of a stream of `interval`."""
        self.interval = interval
        self.candles = tuple(closed)

    def watch_candles(self) -> None:
        self._fill()

    def _fill(self) -> None:
        if not self.is_mounted:
            return  # on_mount fills it
        self.clear()
        self.add_rows(_row(c, self.interval.ms) for c in reversed(self.candles))


def _row(c: Candle, interval_ms: int | None) -> tuple:
    change, sign = fmt.change_pct(c.close, c.open)
    return (
        fmt.candle_time(c.open_time, interval_ms),
        Text(fmt.price(c.open), justify="right"),
        Text(fmt.price(c.high), justify="right"),
        Text(fmt.price(c.low), justify="right"),
        Text(fmt.price(c.close), justify="right"),
        Text(change, justify="right", style={1: "green", -1: "red"}.get(sign, "")),
        Text(fmt.compact(c.volume), justify="right"),
        Text(fmt.compact(c.trades), justify="right"),
    )

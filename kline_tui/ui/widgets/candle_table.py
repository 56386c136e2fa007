"""The candles a chart shows, newest first, in a DataTable; its cursor row is the crosshair's."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable

from kline_tui.model import Interval
from kline_tui.store.resample import Bar
from kline_tui.ui import format as fmt

__all__ = ["CandleTable"]

_COLUMNS = (
    ("Open time", 13),  # the time and the prices fit 80 columns; volume and trades scroll in
    ("Open", 11),
    ("High", 11),
    ("Low", 11),
    ("Close", 11),
    ("Change", 8),
    ("Volume", 9),
    ("Trades", 8),
)
_PRICE_COLUMNS = 6  # the columns every kind has: volume and trades only where a kind has them

Row = tuple[Text, ...]


class CandleTable(DataTable[Text]):
    """Open time (UTC), prices, change, volume and trades of each candle, newest first; the
    forming one, when shown, first and marked.

    `show()` changes only the cells that changed (the forming candle's, at each update) and
    rebuilds the rows when other candles are shown, so the app may call it at every repaint.
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._keys: tuple[int, ...] = ()  # open times of the rows, newest first
        self._rows: list[Row] = []
        self._volume = True
        self.interval = Interval.M1

    def on_mount(self) -> None:
        self._columns(volume=True)

    def _columns(self, *, volume: bool) -> None:
        self.clear(columns=True)
        self._keys, self._rows, self._volume = (), [], volume
        for label, width in _COLUMNS[: None if volume else _PRICE_COLUMNS]:
            self.add_column(label, width=width, key=label)

    def show(
        self,
        bars: Sequence[Bar],
        interval: Interval,
        *,
        cursor: int | None = None,
        volume: bool = True,
    ) -> None:
        """Show `bars` (oldest first) of `interval`, the cursor on `bars[cursor]`."""
        if not self.is_mounted:
            return
        if volume != self._volume:
            self._columns(volume=volume)
        self.interval = interval
        newest_first = list(reversed(bars))
        keys = tuple(b.open_time for b in newest_first)
        rows = [_row(b, interval.ms, volume) for b in newest_first]
        if keys != self._keys:
            self.clear()
            for key, row in zip(keys, rows, strict=True):
                self.add_row(*row, key=str(key))
        else:
            labels = [label for label, _ in _COLUMNS]
            for key, old, new in zip(keys, self._rows, rows, strict=True):
                for column, (a, b) in enumerate(zip(old, new, strict=True)):
                    if a.plain != b.plain or a.style != b.style:
                        self.update_cell(str(key), labels[column], b)
        self._keys, self._rows = keys, rows
        if cursor is not None and 0 <= cursor < len(bars):
            target = len(bars) - 1 - cursor
            if self.cursor_row != target:
                self.move_cursor(row=target, animate=False)


def _row(b: Bar, interval_ms: int | None, volume: bool) -> Row:
    change, sign = fmt.change_pct(b.close, b.open)
    when = fmt.candle_time(b.open_time, interval_ms)
    cells = [
        Text(when + (" •" if b.forming else ""), style="bold" if b.forming else ""),
        Text(fmt.price(b.open), justify="right"),
        Text(fmt.price(b.high), justify="right"),
        Text(fmt.price(b.low), justify="right"),
        Text(fmt.price(b.close), justify="right"),
        Text(change, justify="right", style={1: "green", -1: "red"}.get(sign, "")),
    ]
    if volume:
        cells.append(Text(fmt.compact(b.volume), justify="right"))
        cells.append(Text(fmt.compact(b.trades), justify="right"))
    return tuple(cells)

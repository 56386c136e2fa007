"""Details of one stream: a candlestick chart and a table of its recent closed candles."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from kline_tui.model import StreamKey
from kline_tui.recorder.hub import StreamState, StreamStatus
from kline_tui.ui import format as fmt
from kline_tui.ui.widgets.candle_chart import CandleChart

__all__ = ["DetailsScreen"]

_STATUS_STYLE = {
    StreamStatus.LIVE: "green",
    StreamStatus.STALE: "yellow",
    StreamStatus.RECONNECTING: "yellow",
    StreamStatus.BACKFILLING: "yellow",
    StreamStatus.ERROR: "bold red",
}


class DetailsScreen(Screen[StreamKey]):
    """The chart and recent candles of `key`; `[` and `]` step through the streams as listed.

    Dismisses with the stream shown last, so the table can select it.
    """

    BINDINGS = [
        Binding("escape,backspace", "back", "Back", id="details-back", tooltip="Back to the streams"),
        Binding("left_square_bracket", "step(-1)", "Previous", id="details-prev", tooltip="Previous stream in the list"),
        Binding("right_square_bracket", "step(1)", "Next", id="details-next", tooltip="Next stream in the list"),
    ]

    def __init__(
        self,
        key: StreamKey,
        streams: dict[StreamKey, StreamState],
        listed: Callable[[], list[StreamKey]],
        shown: Callable[[StreamKey], None] | None = None,
    ) -> None:
        super().__init__()
        self.key = key
        self._streams = streams
        self._listed = listed
        self._shown = shown or (lambda key: None)  # told which stream is shown (to load its history)
        self._table_tag: tuple | None = None
        self._title_shown: Text | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="details-title")
        yield CandleChart(id="details-chart")
        table = DataTable(id="details-candles", cursor_type="row", zebra_stripes=True)
        table.border_title = "Recent closed candles (newest first, times UTC)"
        yield table
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#details-candles", DataTable)
        for label, width in (("Open time", 14), ("Open", 12), ("High", 12), ("Low", 12), ("Close", 12),
                             ("Change", 8), ("Volume", 10), ("Trades", 8)):
            table.add_column(label, width=width, key=label)
        self._shown(self.key)
        self.update_view()

    def action_back(self) -> None:
        self.dismiss(self.key)

    def action_step(self, step: int) -> None:
        keys = self._listed()
        if not keys:
            return
        index = keys.index(self.key) if self.key in keys else -step
        self.key = keys[(index + step) % len(keys)]
        self._table_tag = None
        self._shown(self.key)
        self.update_view()

    def update_view(self) -> None:
        """Redraw from the stream's live state (the app calls this at its repaint rate)."""
        if not self.is_mounted:
            return
        state = self._streams.get(self.key)
        self._show_title(state)
        chart = self.query_one(CandleChart)
        if state is None:
            chart.show([], None, self.key.interval)
            return
        chart.show(list(state.closed), state.forming if state.forming and not state.forming.closed else None,
                   self.key.interval)
        self._show_candles(state)

    def _show_title(self, state: StreamState | None) -> None:
        key = self.key
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f" {key.market.value} ", style="bold reverse")
        text.append(f" {key.symbol} {key.interval.value}", style="bold")
        if state is None:
            text.append("  no longer watched", style="yellow")
        else:
            k = state.forming
            if k is not None:
                change, sign = fmt.change_pct(k.close, k.open)
                text.append(f"   last {fmt.price(k.close)} ", style="bold")
                text.append(f"{change} vs open", style={1: "green", -1: "red"}.get(sign, ""))
                text.append(f"   O {fmt.price(k.open)}  H {fmt.price(k.high)}  L {fmt.price(k.low)}")
                text.append(f"   vol {fmt.compact(k.volume)}  trades {fmt.compact(k.trades)}")
            text.append("\n ")
            text.append(state.status.value, style=_STATUS_STYLE.get(state.status, "dim"))
            text.append(
                f" · {state.recorded:,} recorded · {state.duplicates:,} duplicates · {state.gaps:,} gaps",
                style="dim",
            )
            if state.conn_id is not None:
                text.append(f" · connection #{state.conn_id}", style="dim")
            if state.error:
                text.append(f" · {state.error}", style="red")
        if text != self._title_shown:
            self._title_shown = text
            self.query_one("#details-title", Static).update(text)

    def _show_candles(self, state: StreamState) -> None:
        closed = list(state.closed)
        tag = (self.key, len(closed), closed[-1].open_time if closed else None)
        if tag == self._table_tag:
            return
        self._table_tag = tag
        table = self.query_one("#details-candles", DataTable)
        table.clear()
        interval_ms = self.key.interval.ms
        rows = []
        for c in reversed(closed):
            change, sign = fmt.change_pct(c.close, c.open)
            rows.append((
                fmt.candle_time(c.open_time, interval_ms),
                Text(fmt.price(c.open), justify="right"),
                Text(fmt.price(c.high), justify="right"),
                Text(fmt.price(c.low), justify="right"),
                Text(fmt.price(c.close), justify="right"),
                Text(change, justify="right", style={1: "green", -1: "red"}.get(sign, "")),
                Text(fmt.compact(c.volume), justify="right"),
                Text(fmt.compact(c.trades), justify="right"),
            ))
        table.add_rows(rows)

"""Details of one stream: a candlestick chart and a table of its recent closed candles."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import Footer, Static

from kline_tui.model import StreamKey
from kline_tui.recorder.hub import StreamState, StreamStatus
from kline_tui.ui import format as fmt
from kline_tui.ui.widgets.candle_chart import CandleChart
from kline_tui.ui.widgets.candle_table import CandleTable

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

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "escape,backspace", "back", "Back", id="details-back", tooltip="Back to the streams"
        ),
        Binding(
            "left_square_bracket",
            "step(-1)",
            "Previous",
            id="details-prev",
            tooltip="Previous stream in the list",
        ),
        Binding(
            "right_square_bracket",
            "step(1)",
            "Next",
            id="details-next",
            tooltip="Next stream in the list",
        ),
    ]

    # The two lines above the chart; drawn again only when their text changed.
    headline: var[Text] = var(Text, init=False)

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
        # Told which stream is shown, to load its history.
        self._shown = shown or (lambda key: None)

    def compose(self) -> ComposeResult:
        yield Static(id="details-title")
        yield CandleChart(id="details-chart")
        table = CandleTable(id="details-candles")
        table.border_title = "Recent closed candles (newest first, times UTC)"
        yield table
        yield Footer()

    def on_mount(self) -> None:
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
        self._shown(self.key)
        self.update_view()

    def update_view(self) -> None:
        """Redraw from the stream's live state (the app calls this at its repaint rate)."""
        if not self.is_mounted:
            return
        state = self._streams.get(self.key)
        self.headline = _headline(self.key, state)
        closed = list(state.closed) if state is not None else []
        forming = state.forming if state is not None else None
        if forming is not None and forming.closed:
            forming = None  # the newest update closed its candle: it is in `closed`
        self.query_one(CandleChart).show(closed, forming, self.key.interval)
        if state is not None:  # a stream no longer watched keeps its last candles listed
            self.query_one(CandleTable).show(closed, self.key.interval)

    def watch_headline(self, text: Text) -> None:
        self.query_one("#details-title", Static).update(text)


def _headline(key: StreamKey, state: StreamState | None) -> Text:
    """The stream, its forming candle, then its state and counters."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f" {key.market.value} ", style="bold reverse")
    text.append(f" {key.symbol} {key.interval.value}", style="bold")
    if state is None:
        text.append("  no longer watched", style="yellow")
        return text
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
    return text

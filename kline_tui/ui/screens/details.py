"""Details of one stream: a candlestick chart with volume and a crosshair, at the stream's own
interval or a longer one, scrolling back through everything the dataset holds.

What is shown is built from two sources: the dataset, read a page at a time through the
recorder (`Recorder.read_candles`: a thread in this process, the service API when attached) as
the view nears the oldest candle loaded, and the live state (the recent closed candles and the
forming one) that the app hands every repaint. Both are resampled together
(`store.resample`), so the forming candle joins the newest bucket of a longer timeframe.

Work that grows with the history (merging a page in, resampling it) runs in a thread and is
swapped in on the loop; a page's buckets are made again only where the page landed. A key press
or a repaint costs binary searches and the buckets on screen, however much is loaded. A stream
shown at its own interval is not resampled at all, so a month (`1M`) stream is shown too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import polars as pl
from rich.cells import cell_len
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from kline_tui.model import EARLIEST_OPEN_MS, LATEST_MS, CandleRow, Interval, StreamKey
from kline_tui.recorder.hub import StreamState, StreamStatus
from kline_tui.safe_text import safe_text
from kline_tui.store.candle_pages import CandlePage, empty_candles
from kline_tui.store.read import parse_time
from kline_tui.store.resample import (
    CANDLES_SCHEMA,
    TIMEFRAMES,
    Bar,
    bars,
    rebucket,
    resample,
    timeframes_of,
    with_forming,
)
from kline_tui.ui import format as fmt
from kline_tui.ui.widgets.candle_chart import CandleChart
from kline_tui.ui.widgets.candle_table import CandleTable

__all__ = ["DetailsScreen", "HistoryReader"]

_STATUS_STYLE = {
    StreamStatus.LIVE: "green",
    StreamStatus.STALE: "yellow",
    StreamStatus.RECONNECTING: "yellow",
    StreamStatus.BACKFILLING: "yellow",
    StreamStatus.ERROR: "bold red",
}

# Candles of the dataset kept in memory at most (about 100 bytes each): scrolling on past
# them lets go of the far side, which is read again if the view comes back.
MAX_HISTORY_ROWS = 1_000_000
# The fewest candles asked for in one read, however narrow the chart.
MIN_READ = 500
RETRY_S = 10.0  # a read that failed is tried again after this long
# "Nothing older" holds only for a while: the recorder's first flush, a backfill or an import can
# add older candles after it was read; looking at the first candle asks again this often.
FIRST_RECHECK_S = 10.0
# History up to this many rows is resampled on the event loop when the timeframe changes (a few
# milliseconds, no flicker); more is resampled in a thread while the view shows the live candles.
INLINE_RESAMPLE_ROWS = 20_000


class HistoryReader(Protocol):
    """`Recorder.read_candles`: a page of a stream's recorded candles, read off the loop."""

    def __call__(
        self,
        key: StreamKey,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 1500,
        newest_first: bool = False,
    ) -> Awaitable[CandlePage]: ...


@dataclass(slots=True)
class _View:
    """What one repaint shows: the bars that fit, where the crosshair is, and the positions
    (in all buckets) of the first and last shown."""

    bars: list[Bar]
    cursor: int
    left: int
    right: int
    count: int  # buckets in all


class DetailsScreen(Screen[StreamKey]):
    """The chart and candles of `key`; `[` and `]` step through the streams as listed.

    Dismisses with the stream shown last, so the table can select it.
    """

    CSS_PATH = "details.tcss"

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
        Binding(
            "t", "cycle_timeframe(1)", "Timeframe", id="details-timeframe", tooltip="Longer candles"
        ),
        Binding(
            "T",
            "cycle_timeframe(-1)",
            "Shorter timeframe",
            show=False,
            id="details-timeframe-back",
            tooltip="Shorter candles",
        ),
        Binding("g", "goto", "Go to date", id="details-goto", tooltip="Jump to a date (UTC)"),
        Binding("left", "cross(-1)", "Older candle", show=False, tooltip="Crosshair left"),
        Binding("right", "cross(1)", "Newer candle", show=False, tooltip="Crosshair right"),
        Binding("pageup,shift+left", "page(-1)", "Page back", show=False),
        Binding("pagedown,shift+right", "page(1)", "Page forward", show=False),
        Binding("home", "first", "First recorded candle", show=False),
        Binding("end", "live", "Back to live", show=False),
        Binding("0", "timeframe('own')", "Own interval", show=False),
        *(
            Binding(str(n), f"timeframe('{t.value}')", f"Show as {t.value}", show=False)
            for n, t in enumerate(TIMEFRAMES, start=1)
        ),
    ]

    # The lines above the chart; drawn again only when their text changed.
    headline: var[Text] = var(Text, init=False)
    readout: var[Text] = var(Text, init=False)

    def __init__(
        self,
        key: StreamKey,
        streams: dict[StreamKey, StreamState],
        listed: Callable[[], list[StreamKey]],
        shown: Callable[[StreamKey], None] | None = None,
        history: HistoryReader | None = None,
    ) -> None:
        super().__init__()
        self.key = key
        self._streams = streams
        self._listed = listed
        # Told which stream is shown, to load its history.
        self._shown = shown or (lambda key: None)
        self._reader = history
        self.timeframe = key.interval
        self._reset()

    def _reset(self) -> None:
        """Forget the history of the stream shown before (another stream, a jump)."""
        self._generation = getattr(self, "_generation", 0) + 1
        self._history = empty_candles()
        self._history_version = 0
        self._loaded_from: int | None = None  # first open time the loaded rows cover
        self._loaded_to: int | None = None  # end (exclusive) of what is loaded; None: now
        self.at_first = False  # the dataset holds nothing older than what is loaded
        self._first_seen_at = 0.0  # monotonic time a read last found nothing older
        self._loading: str | None = None
        self._history_error: str | None = None
        self._failed_at = 0.0  # monotonic time of the last failed read
        self._right: int | None = None  # open time of the newest bucket shown; None: live
        self._cross: int | None = None  # open time of the crosshair's bucket; None: newest
        self._cache: tuple[object, ...] | None = None
        self._history_cache: tuple[int, Interval] | None = None
        self._resampling: tuple[int, int, Interval] | None = None  # in a thread now
        self._resample_failed: str | None = None  # why that resample failed (not tried again)
        self._resample_error: str | None = None
        own = self.key.interval
        self._history_buckets = resample(self._history, self.timeframe, own=own)
        self._closed_frame = empty_candles()
        self._buckets = resample(self._closed_frame, self.timeframe, own=own)
        self._shown_buckets = self._buckets  # with the forming candle, as last drawn
        self.view: _View | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="details-title")
        yield Static(id="details-readout")
        yield Input(placeholder="YYYY-MM-DD[ HH:MM] (UTC), enter to go", id="details-goto-input")
        yield CandleChart(id="details-chart")
        table = CandleTable(id="details-candles")
        table.can_focus = False  # the crosshair's keys move its cursor
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(CandleChart).focus()
        self._shown(self.key)
        self.update_view()

    def on_resize(self) -> None:
        self.update_view()

    # -- actions ----------------------------------------------------------------------------

    def action_back(self) -> None:
        box = self.query_one("#details-goto-input", Input)
        if box.has_class("-visible"):
            self._close_goto()
            return
        self.dismiss(self.key)

    def action_step(self, step: int) -> None:
        keys = self._listed()
        if not keys:
            return
        index = keys.index(self.key) if self.key in keys else -step
        self.key = keys[(index + step) % len(keys)]
        self.timeframe = self.key.interval
        self._reset()
        self._shown(self.key)
        self.update_view()

    def action_cycle_timeframe(self, step: int) -> None:
        choices = timeframes_of(self.key.interval)
        index = choices.index(self.timeframe) if self.timeframe in choices else 0
        self._set_timeframe(choices[(index + step) % len(choices)])

    def action_timeframe(self, name: str) -> None:
        target = self.key.interval if name == "own" else Interval(name)
        if target not in timeframes_of(self.key.interval):
            self.notify(
                f"A {self.key.interval.value} stream cannot be shown as {target.value}: "
                f"choose one of {', '.join(t.value for t in timeframes_of(self.key.interval))}",
                severity="warning",
                timeout=4,
            )
            return
        self._set_timeframe(target)

    def _set_timeframe(self, target: Interval) -> None:
        if target is self.timeframe:
            return
        self.timeframe = target
        # The same moment stays under the crosshair and at the right edge.
        if self._cross is not None:
            self._cross = target.open_time_at(self._cross)
            # The crosshair in the middle, whatever the new candles' width.
            capacity = self.query_one(CandleChart).capacity
            self._right = target.shift(self._cross, capacity // 2)
        elif self._right is not None:
            self._right = target.open_time_at(self._right)
        self.update_view()

    def action_cross(self, step: int) -> None:
        view = self.view
        if view is None or not view.count:
            return
        index = max(0, min(view.count - 1, view.left + view.cursor + step))
        right = view.right
        if index > right:
            right = index
        elif index < view.left:  # past the left edge: the view follows
            right -= view.left - index
        self._place(index, right)

    def action_page(self, step: int) -> None:
        view = self.view
        if view is None or not view.count:
            return
        capacity = self.query_one(CandleChart).capacity
        right = view.right + step * capacity
        right = max(min(view.count - 1, capacity - 1), min(view.count - 1, right))
        cross = max(0, min(right, view.left + view.cursor + step * capacity))
        self._place(cross, right)

    def action_first(self) -> None:
        """The oldest candle the dataset holds: loaded when it is not yet."""
        fresh = time.monotonic() - self._first_seen_at <= FIRST_RECHECK_S
        if self.at_first and fresh and self._loaded_from is not None:
            self._right = self._cross = None
            self._place_first()
            return
        self._reset()
        self._right = self._cross = EARLIEST_OPEN_MS  # until the first page is in
        self._load("first", start_ms=None, end_ms=None, newest_first=False)

    def action_live(self) -> None:
        if self._loaded_to is not None:
            self._reset()
        self._right = self._cross = None
        self.update_view()

    def action_goto(self) -> None:
        box = self.query_one("#details-goto-input", Input)
        box.value = ""
        box.add_class("-visible")
        box.focus()

    def _close_goto(self) -> None:
        box = self.query_one("#details-goto-input", Input)
        box.remove_class("-visible")
        self.query_one(CandleChart).focus()

    @on(Input.Submitted, "#details-goto-input")
    def _goto_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        try:
            at = parse_time(text[:40])
        except ValueError:
            at = None
        if at is None or not EARLIEST_OPEN_MS <= at < LATEST_MS:
            self.notify(
                f"Not a date: {safe_text(text, 40)!r}; write 2026-11-25 or 2026-11-25 16:30 (UTC)",
                severity="warning",
                timeout=5,
            )
            return
        self._close_goto()
        self.jump_to(at)

    def jump_to(self, at: int) -> None:
        """Show the candle containing the instant `at` (ms, UTC) under the crosshair."""
        self._reset()
        bucket = self.timeframe.open_time_at(at)
        capacity = self.query_one(CandleChart).capacity
        end = self.timeframe.shift(bucket, max(1, capacity // 2))
        self._cross, self._right = bucket, self.timeframe.prev_open(end)
        self._loaded_to = end
        self._load("jump", start_ms=None, end_ms=end, newest_first=True)

    # -- positions --------------------------------------------------------------------------

    def _place(self, cross: int, right: int) -> None:
        """The crosshair on bucket `cross` and the view's right edge at bucket `right`
        (indexes into every bucket); the right edge at the newest live bucket follows live."""
        buckets = self._shown_buckets["open_time"]
        count = len(buckets)
        if not count:
            return
        right = max(0, min(count - 1, right))
        cross = max(0, min(right, cross))
        live = self._loaded_to is None and right == count - 1
        self._right = None if live else int(buckets[right])
        self._cross = None if live and cross == right else int(buckets[cross])
        self.update_view()

    def _place_first(self) -> None:
        capacity = self.query_one(CandleChart).capacity
        self._place(0, capacity - 1)

    # -- history ----------------------------------------------------------------------------

    def _read_size(self) -> int:
        """Candles to ask for in one read: two screens of the timeframe's buckets."""
        own, shown = self.key.interval.ms, self.timeframe.ms
        if own and shown is None and self.timeframe is not self.key.interval:
            shown = 31 * 86_400_000  # a month, at its longest
        ratio = shown // own if own and shown else 1
        capacity = self.query_one(CandleChart).capacity
        return max(MIN_READ, min(200_000, 2 * capacity * ratio))

    def _load(self, why: str, **query: int | bool | None) -> None:
        if self._reader is None:
            return
        self._loading = why
        self._history_error = None
        reader, key, generation = self._reader, self.key, self._generation
        limit = self._read_size()

        async def read() -> None:
            try:
                page = await reader(key, limit=limit, **query)  # type: ignore[arg-type]
                if generation != self._generation:
                    return
                # The merge and the resample are O(history): done in a thread, swapped in here.
                cache, version = self._history_cache, self._history_version
                made = cache is not None and cache[0] == version  # the buckets of this history
                base = _Loaded(
                    self._history,
                    self._history_buckets if made else None,
                    cache[1] if cache is not None and made else self.timeframe,
                    self._loaded_from,
                    self._loaded_to,
                    self.at_first,
                )
                merged = await asyncio.to_thread(
                    _merged, base, page, why, key.interval, MAX_HISTORY_ROWS
                )
            except Exception as exc:  # noqa: BLE001 - any failure to read is said, never raised
                if generation == self._generation:
                    self._loading = None
                    self._history_error = safe_text(str(exc) or type(exc).__name__, 200)
                    self._failed_at = time.monotonic()
                    self.update_view()
                return
            if generation == self._generation and version == self._history_version:
                self._swap_in(why, merged)

        self.run_worker(read(), group="details-history", exclusive=True, exit_on_error=False)

    def _swap_in(self, why: str, merged: _Loaded) -> None:
        """What a read brought (merged in a thread), in place of what was loaded."""
        self._history = merged.history
        self._loaded_from, self._loaded_to = merged.loaded_from, merged.loaded_to
        self.at_first = merged.at_first
        if merged.at_first:
            self._first_seen_at = time.monotonic()
        self._history_version += 1
        if merged.buckets is not None:
            self._history_buckets = merged.buckets
            self._history_cache = (self._history_version, merged.timeframe)
        self._loading = None
        if why == "first":
            self._cache = None
            self.update_view()
            self._place_first()
            return
        self.update_view()

    def _want_history(self, view: _View, capacity: int) -> None:
        """Read more of the dataset when the view nears an end of what is loaded."""
        if self._loading is not None or self._reader is None:
            return
        if self._history_error and time.monotonic() - self._failed_at < RETRY_S:
            return  # said in the readout; tried again in a while (an attached recorder back)
        if self._loaded_from is None:
            self._load("older", end_ms=self._loaded_to, newest_first=True)
        elif not self.at_first and view.left < capacity:
            self._load("older", end_ms=self._loaded_from, newest_first=True)
        elif (
            view.left < capacity
            and len(self._history)
            and time.monotonic() - self._first_seen_at > FIRST_RECHECK_S
        ):
            # Was there anything older by now (written since nothing older was found)?
            self._load("older", end_ms=int(self._history["open_time"][0]), newest_first=True)
        elif self._loaded_to is not None and view.right > view.count - 1 - capacity:
            self._load("newer", start_ms=self._loaded_to, newest_first=False)

    # -- drawing ----------------------------------------------------------------------------

    def update_view(self) -> None:
        """Redraw from the stream's live state (the app calls this at its repaint rate)."""
        if not self.is_mounted:
            return
        state = self._streams.get(self.key)
        self.headline = _headline(self.key, self.timeframe, state)
        chart = self.query_one(CandleChart)
        capacity = chart.capacity
        try:
            buckets, forming_from = self._all_buckets(state)
            self._resample_error = None
        except (ValueError, pl.exceptions.PolarsError) as exc:
            # Candles that cannot be bucketed (a timeframe the interval does not fit) are said
            # on the readout; the app goes on.
            self._resample_error = safe_text(str(exc) or type(exc).__name__, 200)
            buckets, forming_from = self._shown_buckets.clear(), None
        self._shown_buckets = buckets
        view = self._view(buckets, forming_from, capacity)
        self.view = view
        volume = self.key.kind.has_volume
        chart.show(view.bars, self.timeframe, cursor=view.cursor, volume=volume)
        self.query_one(CandleTable).show(
            view.bars, self.timeframe, cursor=view.cursor, volume=volume
        )
        self.readout = self._readout(view)
        self._want_history(view, capacity)

    def _all_buckets(self, state: StreamState | None) -> tuple[pl.DataFrame, int | None]:
        """Every bucket of the loaded history and, at the live edge, of the live candles; and
        the open time of the forming bucket, if there is one.

        The history is resampled once per read and timeframe; live candles newer than it join
        the newest buckets only, and the forming candle its own bucket only, so a repaint costs
        the same however much history is loaded."""
        history, timeframe, own = self._history, self.timeframe, self.key.interval
        if self._history_cache != (self._history_version, timeframe):
            if len(history) > INLINE_RESAMPLE_ROWS:
                self._resample_later()
                # Until the thread is done: the live candles alone, never a stale timeframe.
                history = empty_candles()
            else:
                self._history_buckets = resample(history, timeframe, own=own)
                self._history_cache = (self._history_version, timeframe)
        history_buckets = (
            self._history_buckets
            if self._history_cache == (self._history_version, timeframe)
            else resample(history, timeframe, own=own)
        )
        live = self._loaded_to is None
        newest = int(history["open_time"][-1]) if len(history) else None
        closed = [
            c
            for c in (state.closed if state is not None and live else ())
            if newest is None or c.open_time > newest
        ]
        key = (
            self._history_cache,
            self._history_version,
            timeframe,
            len(closed),
            closed[-1].open_time if closed else None,
        )
        if key != self._cache:
            self._cache = key
            if closed:
                newer = _frame([c.as_row() for c in closed])
                self._closed_frame = pl.concat([history, newer])
                self._buckets = with_forming(history, history_buckets, newer, timeframe, own=own)
            else:
                self._closed_frame, self._buckets = history, history_buckets
        forming = state.forming if state is not None and live else None
        if closed:
            newest = closed[-1].open_time
        if forming is None or forming.closed or (newest or 0) >= forming.open_time:
            return self._buckets, None
        row = _frame([forming.as_row()])
        buckets = with_forming(self._closed_frame, self._buckets, row, timeframe, own=own)
        return buckets, timeframe.open_time_at(forming.open_time)

    def _resample_later(self) -> None:
        """Resample the loaded history at the timeframe shown, in a thread (once per version
        and timeframe); the view is drawn again when it is in."""
        wanted = (self._generation, self._history_version, self.timeframe)
        if self._resampling == wanted:
            if self._resample_failed:
                raise ValueError(self._resample_failed)
            return
        self._resampling, self._resample_failed = wanted, None
        history, own = self._history, self.key.interval

        async def work() -> None:
            buckets: pl.DataFrame | None = None
            try:
                buckets = await asyncio.to_thread(resample, history, wanted[2], own=own)
            except Exception as exc:  # noqa: BLE001 - said in the readout, never raised
                if self._resampling == wanted:  # kept: not tried again
                    self._resample_failed = safe_text(str(exc) or type(exc).__name__, 200)
            else:
                if self._resampling == wanted:
                    self._resampling = None
            current = (self._generation, self._history_version, self.timeframe)
            if buckets is not None and wanted == current:
                self._history_buckets = buckets
                self._history_cache = (wanted[1], wanted[2])
            self.update_view()

        self.run_worker(work(), group="details-resample", exclusive=True, exit_on_error=False)

    def _view(self, buckets: pl.DataFrame, forming_from: int | None, capacity: int) -> _View:
        opens = buckets["open_time"]
        count = len(opens)
        if not count:
            return _View([], 0, 0, -1, 0)
        if self._right is None:
            right = count - 1
        else:
            right = max(0, int(opens.search_sorted(self._right, side="right")) - 1)
            right = max(right, min(count - 1, capacity - 1))  # a full screen when there is one
        left = max(0, right - capacity + 1)
        if self._cross is None:
            cross = right
        else:
            cross = int(opens.search_sorted(self._cross, side="right")) - 1
            cross = max(left, min(right, cross))
        shown = bars(buckets.slice(left, right - left + 1), forming_from)
        return _View(shown, cross - left, left, right, count)

    def _readout(self, view: _View) -> Text:
        """The crosshair's candle, then where the history stands. Too wide for the line, the
        volume and the count of candles per bucket are left out (the count first), and where
        the history stands is said in short or not at all, rather than a word being cut."""
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f" {self.timeframe.value} ", style="bold reverse")
        extras: list[Text] = []
        status = Text()
        if view.bars:
            bar = view.bars[view.cursor]
            text.append(f" {fmt.candle_time(bar.open_time, self.timeframe.ms)} ", style="bold")
            text.append(f"O {fmt.price(bar.open)} H {fmt.price(bar.high)} ")
            text.append(f"L {fmt.price(bar.low)} C {fmt.price(bar.close)} ")
            change, sign = fmt.change_pct(bar.close, bar.open)
            text.append(change, style={1: "green", -1: "red"}.get(sign, ""))
            if self.key.kind.has_volume:
                extras.append(Text(f" V {fmt.compact(bar.volume)}"))
            if self.timeframe is not self.key.interval:
                extras.append(Text(f" ({bar.candles} x {self.key.interval.value})", style="dim"))
            if bar.forming:
                status.append(" forming", style="yellow")
        status.append("  ")
        width = self.query_one("#details-readout", Static).size.width
        history = self._history_status(view)
        if history is not None:
            words, short, style = history
            room = width - text.cell_len - status.cell_len if width else cell_len(words)
            if cell_len(words) <= room:
                status.append(words, style=style)
            elif cell_len(short) <= room or style == "red":  # an error is never left out
                status.append(short, style=style)
            # else left out: the chart shows it, a cut word would not
        need = text.cell_len + cell_len(status.plain.rstrip())
        while extras and width and need + sum(e.cell_len for e in extras) > width:
            extras.pop()
        for extra in extras:
            text.append_text(extra)
        text.append_text(status)
        return text

    def _history_status(self, view: _View) -> tuple[str, str, str] | None:
        """Where the history stands, in words and in short (for a narrow line), and its style."""
        if self._resample_error:
            words = f"cannot show as {self.timeframe.value}: {self._resample_error}"
            return words, f"cannot show as {self.timeframe.value}", "red"
        if self._history_error:
            return f"history: {self._history_error}", "history: error", "red"
        if self._resampling is not None and not self._resample_failed:
            return "resampling…", "resampling…", "yellow"
        if self._loading is not None:
            return "reading the dataset…", "reading…", "yellow"
        if self.at_first and view.count and view.left == 0:
            return "◂ first recorded candle", "◂ first", "dim"
        return None

    def watch_headline(self, text: Text) -> None:
        self.query_one("#details-title", Static).update(text)

    def watch_readout(self, text: Text) -> None:
        self.query_one("#details-readout", Static).update(text)


@dataclass(frozen=True, slots=True)
class _Loaded:
    """What is loaded of the dataset: the rows, their buckets at `timeframe` (None: not made),
    the range covered and whether the first recorded candle is in."""

    history: pl.DataFrame
    buckets: pl.DataFrame | None
    timeframe: Interval
    loaded_from: int | None
    loaded_to: int | None
    at_first: bool


def _merged(base: _Loaded, page: CandlePage, why: str, own: Interval, cap: int) -> _Loaded:
    """`base` with a page read for `why` ("older", "jump", "newer", "first") joined in, at most
    `cap` rows kept (the far side let go of), and the buckets brought up to date for only what
    changed. O(history): run in a thread."""
    frame = page.frame.cast(CANDLES_SCHEMA)
    older = why in ("older", "jump")
    history = base.history
    parts = [frame, history] if older else [history, frame]
    merged = pl.concat(parts)
    joined = all(len(p) for p in parts) and parts[0]["open_time"][-1] < parts[1]["open_time"][0]
    if not joined:  # the page overlaps what is loaded (both are sorted, each time once)
        merged = merged.unique("open_time", keep="first").sort("open_time")
    elif merged.n_chunks() > 16:  # page after page appended: one chunk again, here in the thread
        merged = merged.rechunk()
    loaded_from, loaded_to, at_first = base.loaded_from, base.loaded_to, base.at_first
    if older:
        # Read newest first: the next page ends where this one began.
        at_first = page.next_ms is None
        loaded_from = page.next_ms if page.next_ms is not None else EARLIEST_OPEN_MS
    else:
        if why == "first":
            at_first, loaded_from = True, EARLIEST_OPEN_MS
        loaded_to = page.next_ms  # None: everything up to now is in
    if len(merged) > cap:  # let go of the far side of what is loaded
        if older:
            loaded_to = int(merged["open_time"][cap])
            merged = merged.head(cap)
        else:
            merged = merged.tail(cap)
            loaded_from, at_first = int(merged["open_time"][0]), False
    if base.buckets is not None and len(frame):
        opens = frame["open_time"]
        start, end = int(opens[0]), int(opens[-1]) + 1
        buckets = rebucket(merged, base.buckets, base.timeframe, start, end, own=own)
    else:
        buckets = resample(merged, base.timeframe, own=own)
    return _Loaded(merged, buckets, base.timeframe, loaded_from, loaded_to, at_first)


def _frame(rows: list[CandleRow]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=CANDLES_SCHEMA, orient="row")


def _headline(key: StreamKey, timeframe: Interval, state: StreamState | None) -> Text:
    """The stream, its forming candle, then its state and counters."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f" {key.partition} ", style="bold reverse")
    text.append(f" {key.symbol} {key.interval.value}", style="bold")
    if timeframe is not key.interval:
        text.append(f" as {timeframe.value}", style="bold")
    if state is None:
        text.append("  no longer watched", style="yellow")
        return text
    k = state.forming
    if k is not None:
        change, sign = fmt.change_pct(k.close, k.open)
        text.append(f"   last {fmt.price(k.close)} ", style="bold")
        text.append(f"{change} vs open", style={1: "green", -1: "red"}.get(sign, ""))
        text.append(f"   O {fmt.price(k.open)}  H {fmt.price(k.high)}  L {fmt.price(k.low)}")
        if key.kind.has_volume:
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

"""A candlestick chart drawn in the terminal: bodies in half blocks, wicks in box lines.

Each candle takes two columns (a body and a gap); each text row holds two price steps, upper
and lower half, so bodies and wicks have twice the terminal's vertical resolution. A price axis
on the right marks round prices and the last price; a time axis below marks open times in UTC.
Below the prices, a volume pane draws each candle's volume in eighth blocks (for streams that
have volume); a crosshair marks one candle, its time on the axis and its close on the scale.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import ClassVar, Protocol

from rich.segment import Segment
from rich.style import Style
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from kline_tui.model import Interval
from kline_tui.ui import format as fmt

__all__ = ["CandleChart", "nice_step"]


class CandleLike(Protocol):
    @property
    def open_time(self) -> int: ...
    @property
    def open(self) -> float: ...
    @property
    def high(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def close(self) -> float: ...
    @property
    def volume(self) -> float | None: ...
    @property
    def forming(self) -> bool: ...


AXIS_WIDTH = 13  # "┤" and a price label
CANDLE_STEP = 2  # columns per candle: the body and a gap

Cell = tuple[str, Style]  # a character and its style
Label = tuple[str, Style]  # a price on the axis and its style
Styles = dict[str, Style]  # by component name: up, down, forming, axis, grid, last, cross
_COMPONENTS = ("up", "down", "forming", "axis", "grid", "last", "cross")
_EIGHTHS = " ▁▂▃▄▅▆▇█"


def nice_step(span: float, count: int) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about `count` ticks over `span`."""
    if span <= 0 or count <= 0:
        return 1.0
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def _time_label(open_time: int, interval: Interval) -> str:
    """An open time as precise as the interval needs: seconds, minutes or the day."""
    t = time.gmtime(open_time / 1000)
    ms = interval.ms
    if ms is not None and ms < 60_000:
        return time.strftime("%H:%M:%S", t)
    if ms is not None and ms < 86_400_000:
        return time.strftime("%H:%M", t)
    return time.strftime("%m-%d", t)


class PriceScale:
    """Maps prices to half rows of the plot: row 0 is the top half of the first text row."""

    def __init__(self, candles: Sequence[CandleLike], rows: int) -> None:
        lo = min(c.low for c in candles)
        hi = max(c.high for c in candles)
        if hi <= lo:  # a flat market still gets a band to draw in
            pad = abs(hi) * 0.001 or 1.0
            lo, hi = lo - pad, hi + pad
        self.lo, self.hi = lo, hi
        self.rows = rows
        self.halves = rows * 2

    def half_row(self, price: float) -> int:
        span = self.hi - self.lo
        return max(0, min(self.halves - 1, int((self.hi - price) / span * (self.halves - 1) + 0.5)))

    def row(self, price: float) -> int:
        return self.half_row(price) // 2


class Canvas:
    """A grid of cells (a character and its style) that becomes the chart's strips."""

    def __init__(self, width: int, height: int, style: Style) -> None:
        self.width, self.height = width, height
        self.cells: list[list[Cell]] = [[(" ", style)] * width for _ in range(height)]

    def put(self, row: int, x: int, text: str, style: Style) -> None:
        for j, char in enumerate(text):
            self.cells[row][x + j] = (char, style)

    def fill(self, row: int, x0: int, x1: int, char: str, style: Style) -> None:
        self.cells[row][x0:x1] = [(char, style)] * (x1 - x0)

    def strips(self) -> list[Strip]:
        return [_strip(row) for row in self.cells]


# Which half block a text row gets for a body, and which box line for a wick, by whether its
# (upper, lower) half is covered.
_BODY = {(True, True): "█", (True, False): "▀", (False, True): "▄"}
_WICK = {(True, True): "│", (True, False): "╵", (False, True): "╷"}


class CandleChart(Widget, can_focus=True):
    """Candles of one stream, oldest first (the caller picks which: `capacity` fit), a volume
    pane below them and a crosshair on one of them.

    `show()` sets the reactives; the chart is drawn again (once, at its next paint) only when
    they changed, so the app may call it at every repaint.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {f"candle-chart--{name}" for name in _COMPONENTS}

    bars: reactive[tuple[CandleLike, ...]] = reactive(tuple)
    interval: reactive[Interval] = reactive(Interval.M1)
    cursor: reactive[int | None] = reactive(None)
    volume: reactive[bool] = reactive(True)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._lines: list[Strip] | None = None  # drawn at the first paint after a change

    @property
    def capacity(self) -> int:
        """How many candles fit the plot's width now."""
        return max(1, (self.size.width - AXIS_WIDTH) // CANDLE_STEP)

    def show(
        self,
        bars: Sequence[CandleLike],
        interval: Interval,
        *,
        cursor: int | None = None,
        volume: bool = True,
    ) -> None:
        """Draw these candles (oldest first; the newest that fit), with the crosshair on
        `bars[cursor]`, and a volume pane when `volume`."""
        self.bars = tuple(bars)
        self.interval = interval
        self.cursor = cursor
        self.volume = volume

    def watch_bars(self) -> None:
        self._lines = None

    def watch_interval(self) -> None:
        self._lines = None

    def watch_cursor(self) -> None:
        self._lines = None

    def watch_volume(self) -> None:
        self._lines = None

    def on_resize(self) -> None:
        self._lines = None

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._lines = None

    def render_line(self, y: int) -> Strip:
        if self._lines is None:
            self._lines = self._draw()
        if y < len(self._lines):
            return self._lines[y]
        return Strip.blank(self.size.width, self.rich_style)

    # -- drawing ----------------------------------------------------------------------------

    def _draw(self) -> list[Strip]:
        """The whole chart: grid, candles, volume, price axis on the right, time axis below."""
        width, height = self.size
        style = self._styles()
        plot_w = max(0, width - AXIS_WIDTH)
        candles = self._visible(plot_w)
        if not candles or plot_w < CANDLE_STEP or height < 3:
            return self._waiting(width, height, style)
        with_volume = self.volume and height >= 10
        volume_h = max(2, (height - 1) // 5) if with_volume else 0
        plot_h = max(1, height - 1 - volume_h)
        scale = PriceScale(candles, plot_h)
        canvas = Canvas(width, height, self.rich_style)
        labels = self._grid(canvas, scale, plot_w, style)
        last = candles[-1].close
        labels[scale.row(last)] = (fmt.price(last), style["last"])
        x0 = plot_w - len(candles) * CANDLE_STEP  # the newest candle ends at the axis
        cursor = self.cursor
        cross = candles[cursor] if cursor is not None and 0 <= cursor < len(candles) else None
        if cross is not None and cross is not candles[-1]:
            labels[scale.row(cross.close)] = (fmt.price(cross.close), style["cross"])
        self._bodies_and_wicks(canvas, candles, scale, x0, style)
        self._price_axis(canvas, labels, plot_w, plot_h, style)
        if volume_h:
            self._volume(canvas, candles, plot_h, volume_h, x0, plot_w, style)
        if cross is not None and cursor is not None:
            self._crosshair(canvas, x0 + cursor * CANDLE_STEP, plot_h + volume_h, style)
        self._time_axis(canvas, candles, x0, plot_w, style, cursor)
        return canvas.strips()

    def _styles(self) -> Styles:
        base = self.rich_style
        return {
            name: base + self.get_component_rich_style(f"candle-chart--{name}", partial=True)
            for name in _COMPONENTS
        }

    def _visible(self, plot_w: int) -> list[CandleLike]:
        """The newest candles that fit the plot's width."""
        return list(self.bars[-max(1, plot_w // CANDLE_STEP) :])

    def _waiting(self, width: int, height: int, style: Styles) -> list[Strip]:
        base = self.rich_style
        message = "waiting for candles…"
        return [Strip([Segment(message[:width].ljust(width), base + style["grid"])])] + [
            Strip.blank(width, base) for _ in range(height - 1)
        ]

    @staticmethod
    def _grid(canvas: Canvas, scale: PriceScale, plot_w: int, style: Styles) -> dict[int, Label]:
        """Dotted rows at round prices; returns the axis labels by text row."""
        step = nice_step(scale.hi - scale.lo, max(1, scale.rows // 3))
        tick = math.ceil(scale.lo / step) * step
        labels: dict[int, Label] = {}
        while tick <= scale.hi + 1e-12:
            row = scale.row(tick)
            labels[row] = (fmt.price(tick), style["axis"])
            canvas.fill(row, 0, plot_w, "┈", style["grid"])
            tick += step
        return labels

    def _bodies_and_wicks(
        self, canvas: Canvas, candles: list[CandleLike], scale: PriceScale, x0: int, style: Styles
    ) -> None:
        """Bodies in half blocks and wicks in box lines, one candle every CANDLE_STEP columns."""
        for i, c in enumerate(candles):
            s = _candle_style(c, style)
            body = (scale.half_row(max(c.open, c.close)), scale.half_row(min(c.open, c.close)))
            wick = (scale.half_row(c.high), scale.half_row(c.low))
            for row in range(wick[0] // 2, wick[1] // 2 + 1):
                upper, lower = 2 * row, 2 * row + 1
                in_body = (body[0] <= upper <= body[1], body[0] <= lower <= body[1])
                in_wick = (wick[0] <= upper <= wick[1], wick[0] <= lower <= wick[1])
                char = _BODY.get(in_body) or _WICK.get(in_wick, " ")
                canvas.put(row, x0 + i * CANDLE_STEP, char, s)

    @staticmethod
    def _price_axis(
        canvas: Canvas, labels: dict[int, Label], plot_w: int, plot_h: int, style: Styles
    ) -> None:
        """A line right of the plot, with a tick and a price on the labelled rows."""
        for row in range(plot_h):
            label = labels.get(row)
            if label is None:
                canvas.put(row, plot_w, "│", style["axis"])
                continue
            text, label_style = label
            canvas.put(row, plot_w, "┤", style["axis"])
            canvas.put(row, plot_w + 1, f" {text} "[: AXIS_WIDTH - 1], label_style)

    def _volume(
        self,
        canvas: Canvas,
        candles: list[CandleLike],
        top: int,
        rows: int,
        x0: int,
        plot_w: int,
        style: Styles,
    ) -> None:
        """Each candle's volume as a bar in eighth blocks, scaled to the largest one shown."""
        most = max((c.volume or 0.0 for c in candles), default=0.0)
        for row in range(top, top + rows):
            canvas.put(row, plot_w, "│", style["axis"])
        canvas.put(top, plot_w, "┤", style["axis"])
        canvas.put(top, plot_w + 1, f" {fmt.compact(most)} "[: AXIS_WIDTH - 1], style["axis"])
        if most <= 0 or not math.isfinite(most):
            return
        for i, c in enumerate(candles):
            eighths = round((c.volume or 0.0) / most * rows * 8)
            s = _candle_style(c, style)
            for k in range(rows):  # from the bottom row up
                fill = min(8, max(0, eighths - 8 * k))
                if fill:
                    canvas.put(top + rows - 1 - k, x0 + i * CANDLE_STEP, _EIGHTHS[fill], s)

    @staticmethod
    def _crosshair(canvas: Canvas, x: int, rows: int, style: Styles) -> None:
        """A dotted line down the marked candle's column, where nothing else is drawn."""
        for row in range(rows):
            char, _ = canvas.cells[row][x]
            if char in (" ", "┈"):
                canvas.put(row, x, "┆", style["cross"])

    def _time_axis(
        self,
        canvas: Canvas,
        candles: list[CandleLike],
        x0: int,
        plot_w: int,
        style: Styles,
        cursor: int | None = None,
    ) -> None:
        """The bottom row: a time every ~16 columns, on a candle, counted from the newest; the
        crosshair's candle's time over them."""
        row = canvas.height - 1
        canvas.fill(row, 0, plot_w, "─", style["axis"])
        canvas.put(row, plot_w, "┘", style["axis"])
        marked: tuple[int, str] | None = None  # the crosshair's label: where, what
        if cursor is not None and 0 <= cursor < len(candles):
            text = f" {_time_label(candles[cursor].open_time, self.interval)} "
            x = max(0, min(plot_w - len(text), x0 + cursor * CANDLE_STEP - len(text) // 2))
            marked = (x, text)
        every = max(1, 16 // CANDLE_STEP)
        for i in range(len(candles) - 1, -1, -every):
            text = _time_label(candles[i].open_time, self.interval)
            x = x0 + i * CANDLE_STEP
            clear = marked is None or x + len(text) < marked[0] or x > marked[0] + len(marked[1])
            if x >= 0 and x + len(text) <= plot_w and clear:
                canvas.put(row, x, text, style["axis"])
        canvas.put(row, plot_w + 1, " UTC"[: AXIS_WIDTH - 1], style["axis"])
        if marked is not None and len(marked[1]) <= plot_w:
            canvas.put(row, marked[0], marked[1], style["cross"] + Style(reverse=True))


def _candle_style(c: CandleLike, style: Styles) -> Style:
    if c.forming:
        return style["forming"]
    return style["up"] if c.close >= c.open else style["down"]


def _strip(row: list[Cell]) -> Strip:
    """One row of cells as a strip, one segment per run of the same style."""
    segments: list[Segment] = []
    run: list[str] = []
    run_style: Style | None = None
    for char, style in row:
        if style is not run_style and run:
            segments.append(Segment("".join(run), run_style))
            run = []
        run_style = style
        run.append(char)
    if run:
        segments.append(Segment("".join(run), run_style))
    return Strip(segments)

"""A candlestick chart drawn in the terminal: bodies in half blocks, wicks in box lines.

Each candle takes two columns (a body and a gap); each text row holds two price steps, upper
and lower half, so bodies and wicks have twice the terminal's vertical resolution. A price axis
on the right marks round prices and the last price; a time axis below marks open times in UTC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

from kline_tui.model import Interval
from kline_tui.ui import format as fmt

__all__ = ["CandleChart", "nice_step"]


class CandleLike(Protocol):
    open_time: int
    open: float
    high: float
    low: float
    close: float


AXIS_WIDTH = 13  # "┤" and a price label
CANDLE_STEP = 2  # columns per candle: the body and a gap


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
    import time as _time

    t = _time.gmtime(open_time / 1000)
    ms = interval.ms
    if ms is not None and ms < 60_000:
        return _time.strftime("%H:%M:%S", t)
    if ms is not None and ms < 86_400_000:
        return _time.strftime("%H:%M", t)
    return _time.strftime("%m-%d", t)


class CandleChart(Widget):
    """Recent candles of one stream; the forming one, if given, is drawn last."""

    COMPONENT_CLASSES = {
        "candle-chart--up",
        "candle-chart--down",
        "candle-chart--forming",
        "candle-chart--axis",
        "candle-chart--grid",
        "candle-chart--last",
    }

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._candles: list[CandleLike] = []
        self._forming: CandleLike | None = None
        self._interval = Interval.M1
        self._lines: list[Strip] | None = None
        self._tag: tuple | None = None

    def show(self, closed: Sequence[CandleLike], forming: CandleLike | None, interval: Interval) -> None:
        """Draw these candles (oldest first) next time the chart paints."""
        last = forming
        tag = (
            len(closed),
            closed[-1].open_time if closed else None,
            (last.open_time, last.close, last.high, last.low) if last is not None else None,
            interval,
        )
        if tag == self._tag:
            return
        self._tag = tag
        self._candles = list(closed)
        if forming is not None and (not closed or forming.open_time > closed[-1].open_time):
            self._forming = forming
        else:
            self._forming = None
        self._interval = interval
        self._lines = None
        self.refresh()

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
        width, height = self.size
        base = self.rich_style
        style = {name: base + self.get_component_rich_style(f"candle-chart--{name}", partial=True)
                 for name in ("up", "down", "forming", "axis", "grid", "last")}
        plot_w = max(0, width - AXIS_WIDTH)
        plot_h = max(1, height - 1)
        candles = list(self._candles)
        if self._forming is not None:
            candles.append(self._forming)
        candles = candles[-max(1, plot_w // CANDLE_STEP):]
        if not candles or plot_w < CANDLE_STEP or height < 3:
            message = "waiting for candles…"
            return [Strip([Segment(message[:width].ljust(width), base + style["grid"])])] + [
                Strip.blank(width, base) for _ in range(height - 1)
            ]
        lo = min(c.low for c in candles)
        hi = max(c.high for c in candles)
        if hi <= lo:
            pad = abs(hi) * 0.001 or 1.0
            lo, hi = lo - pad, hi + pad
        halves = plot_h * 2

        def half_row(price: float) -> int:
            return max(0, min(halves - 1, int((hi - price) / (hi - lo) * (halves - 1) + 0.5)))

        # cells[y][x] = (char, style); start with blanks.
        blank = (" ", base)
        cells = [[blank] * width for _ in range(height)]

        # Grid rows and labels at round prices.
        step = nice_step(hi - lo, max(1, plot_h // 3))
        tick = math.ceil(lo / step) * step
        labels: dict[int, tuple[str, Style]] = {}
        while tick <= hi + 1e-12:
            row = half_row(tick) // 2
            labels[row] = (fmt.price(tick), style["axis"])
            for x in range(plot_w):
                cells[row][x] = ("┈", style["grid"])
            tick += step
        last = candles[-1].close
        labels[half_row(last) // 2] = (fmt.price(last), style["last"])

        x0 = plot_w - len(candles) * CANDLE_STEP
        for i, c in enumerate(candles):
            x = x0 + i * CANDLE_STEP
            forming = self._forming is not None and c is self._forming
            s = style["forming"] if forming else (style["up"] if c.close >= c.open else style["down"])
            body_top, body_bot = half_row(max(c.open, c.close)), half_row(min(c.open, c.close))
            wick_top, wick_bot = half_row(c.high), half_row(c.low)
            for row in range(wick_top // 2, wick_bot // 2 + 1):
                upper, lower = 2 * row, 2 * row + 1
                in_body = (body_top <= upper <= body_bot, body_top <= lower <= body_bot)
                in_wick = (wick_top <= upper <= wick_bot, wick_top <= lower <= wick_bot)
                char = {(True, True): "█", (True, False): "▀", (False, True): "▄"}.get(in_body)
                if char is None:
                    char = {(True, True): "│", (True, False): "╵", (False, True): "╷"}.get(in_wick, " ")
                cells[row][x] = (char, s)

        # The price axis.
        for row in range(plot_h):
            label = labels.get(row)
            if label is None:
                cells[row][plot_w] = ("│", style["axis"])
                continue
            text, label_style = label
            cells[row][plot_w] = ("┤", style["axis"])
            for j, ch in enumerate(f" {text} "[: AXIS_WIDTH - 1]):
                cells[row][plot_w + 1 + j] = (ch, label_style)

        # The time axis: a label every ~16 columns, aligned on a candle.
        axis_row = height - 1
        for x in range(plot_w):
            cells[axis_row][x] = ("─", style["axis"])
        cells[axis_row][plot_w] = ("┘", style["axis"])
        every = max(1, 16 // CANDLE_STEP)
        for i in range(len(candles) - 1, -1, -every):
            text = _time_label(candles[i].open_time, self._interval)
            x = x0 + i * CANDLE_STEP
            if x < 0 or x + len(text) > plot_w:
                continue
            for j, ch in enumerate(text):
                cells[axis_row][x + j] = (ch, style["axis"])
        for j, ch in enumerate(" UTC"[: AXIS_WIDTH - 1]):
            cells[axis_row][plot_w + 1 + j] = (ch, style["axis"])

        return [self._strip(row) for row in cells]

    @staticmethod
    def _strip(row: list[tuple[str, Style]]) -> Strip:
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

"""The watch table: one row per stream, drawn line by line straight from the live state.

A DataTable with 1,000 rows and thousands of `update_cell` calls a second spends its time on
bookkeeping nobody sees. This table keeps no cells: each repaint it reads the streams' state for
the rows on screen only (the Line API), so its cost follows the terminal's height, not the watch
list's length. The order of the rows (filter, then sort, then groups) is recomputed on each tick
and at once on a key that changes it.

Its layout (which columns, in what order; rows grouped by market or symbol; compact) comes from
the config's `[ui]` table. Columns that do not fit the width are left out, the least useful
first, so the symbol and the state are never cut: a state word is at most 13 characters.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import var
from textual.scroll_view import ScrollView
from textual.strip import Strip

from kline_tui.model import Market, StreamKey
from kline_tui.recorder.hub import StreamState, StreamStatus
from kline_tui.ui import format as fmt
from kline_tui.ui.widgets.sparkline import sparkline

__all__ = [
    "COLUMNS",
    "COLUMN_IDS",
    "SPARK_CANDLES",
    "Column",
    "Group",
    "GroupLine",
    "Sort",
    "WatchTable",
    "fit_columns",
    "receiving",
    "state_label",
    "symbol_cell",
]

SPARK_CANDLES = 60  # closed candles a sparkline spans at full width


@dataclass(frozen=True, slots=True)
class Column:
    """One column: `width` 0 means it takes the room left over (the sparkline)."""

    id: str
    title: str
    width: int
    right: bool = False
    sort: str | None = None  # the Sort a click on its header selects


COLUMNS: tuple[Column, ...] = (
    Column("market", "Mkt", 5, sort="symbol"),
    Column("symbol", "Symbol", 16, sort="symbol"),
    Column("interval", "Int", 3, sort="symbol"),
    Column("last", "Last", 12, right=True),
    Column("change", "vs open", 8, right=True, sort="change"),
    Column("high", "High", 12, right=True),
    Column("low", "Low", 12, right=True),
    Column("volume", "Volume", 9, right=True, sort="volume"),
    Column("trades", "Trades", 7, right=True, sort="trades"),
    Column("spark", f"Last {SPARK_CANDLES} closes", 0),
    Column("recorded", "Rec", 7, right=True, sort="recorded"),
    # The longest state word is 13 wide ("backfill 123K", "reconnecting"): never cut.
    Column("state", "State", 13, sort="state"),
)
COLUMN_IDS = tuple(c.id for c in COLUMNS)
_BY_ID = {c.id: c for c in COLUMNS}
REQUIRED = ("symbol", "state")  # shown whatever the layout says
SPARK_MIN, SPARK_MAX = 8, SPARK_CANDLES
# Longer lists than this are re-sorted at every LONG_LIST_EVERYth repaint only.
LONG_LIST, LONG_LIST_EVERY = 1000, 4
# Where the width runs short these columns go first, in this order; the symbol, the last price
# and the state stay. Compact mode leaves out the first five whatever the width.
_DROPPED_FIRST = (
    "high",
    "low",
    "trades",
    "volume",
    "recorded",
    "spark",
    "market",
    "interval",
    "change",
)
_COMPACT_DROPS = _DROPPED_FIRST[:5]


def _fixed_width(columns: tuple[Column, ...]) -> int:
    return sum(c.width for c in columns) + len(columns) + 1  # a space before each, one after


def _needed(columns: tuple[Column, ...]) -> int:
    spark = SPARK_MIN if any(c.id == "spark" for c in columns) else 0
    return _fixed_width(columns) + spark


def fit_columns(
    width: int, chosen: tuple[str, ...] = COLUMN_IDS, *, compact: bool = False
) -> tuple[tuple[Column, ...], int]:
    """The chosen columns (ids, in order; symbol and state added when missing) that fit `width`
    cells, and the sparkline's width."""
    ids = [i for i in dict.fromkeys(chosen) if i in _BY_ID]
    for required in REQUIRED:
        if required not in ids:
            ids.insert(0 if required == "symbol" else len(ids), required)
    if compact:
        ids = [i for i in ids if i not in _COMPACT_DROPS]
    columns = tuple(_BY_ID[i] for i in ids)
    for column_id in _DROPPED_FIRST:
        if _needed(columns) <= width:
            break
        columns = tuple(c for c in columns if c.id != column_id)
    return columns, max(SPARK_MIN, min(SPARK_MAX, width - _fixed_width(columns)))


class Group(enum.Enum):
    """How rows are grouped: `g` cycles through these, in this order."""

    NONE = "none"
    MARKET = "market"
    SYMBOL = "symbol"


@dataclass(frozen=True, slots=True)
class GroupLine:
    """A group's heading line: its name, how many of its streams are shown and how many live."""

    name: str
    streams: int
    live: int


def _group_of(key: StreamKey, group: Group) -> tuple[int, str]:
    """The group a stream falls in, as a sort key and a name."""
    if group is Group.MARKET:
        return list(Market).index(key.market), key.market.value
    # By the traded pair: BTCUSD_PERP, its quarterlies and its index share the group BTCUSD.
    name = key.symbol.split("_")[0]
    return 0, name


# Worst first: sorting by state brings what needs attention to the top.
_STATE_RANK = {
    StreamStatus.ERROR: 0,
    StreamStatus.RECONNECTING: 1,
    StreamStatus.STALE: 2,
    StreamStatus.BACKFILLING: 3,
    StreamStatus.SUBSCRIBING: 4,
    StreamStatus.WAITING: 5,
    StreamStatus.LIVE: 6,
}


def _change(state: StreamState) -> float | None:
    """The forming candle's change from its open, of the open's magnitude (as `fmt.change_pct`:
    a premium index rising from -0.0003 to -0.0002 sorts as a rise)."""
    k = state.forming
    if k is None or not k.open:
        return None
    return (k.close - k.open) / abs(k.open)


def _missing_last(value: float | None, descending: bool) -> tuple[int, float]:
    # Streams without data sort after those with data; `descending` puts the largest first.
    if value is None:
        return (1, 0.0)
    return (0, -value if descending else value)


class Sort(enum.Enum):
    """The orders `s` cycles through, in that order."""

    LIST = ("watch list", False)
    SYMBOL = ("symbol", False)
    CHANGE = ("change vs open", True)
    VOLUME = ("volume", True)
    TRADES = ("trades", True)
    RECORDED = ("rows recorded", True)
    STATE = ("state, worst first", False)

    def __init__(self, label: str, descending: bool) -> None:
        self.label = label
        self.descending = descending

    def key_func(self, position: dict[StreamKey, int]) -> Callable[[StreamState], Any]:
        """The sort key for a state; `position` is each stream's place in the watch list."""
        d = self.descending
        if self is Sort.LIST:
            return lambda s: position[s.key]
        if self is Sort.SYMBOL:
            return lambda s: (
                s.key.symbol,
                s.key.market.value,
                s.key.interval.ms or 0,
                s.key.kind.value,
            )
        if self is Sort.CHANGE:
            return lambda s: _missing_last(_change(s), d)
        if self is Sort.VOLUME:
            return lambda s: _missing_last(s.forming.volume if s.forming else None, d)
        if self is Sort.TRADES:
            return lambda s: _missing_last(s.forming.trades if s.forming else None, d)
        if self is Sort.RECORDED:
            return lambda s: -s.recorded
        return lambda s: (_STATE_RANK.get(s.status, 9), position[s.key])


_SORT_CYCLE = list(Sort)
# The column whose header shows the sort arrow.
_SORTED_COLUMN = {
    Sort.SYMBOL: "symbol",
    Sort.CHANGE: "change",
    Sort.VOLUME: "volume",
    Sort.TRADES: "trades",
    Sort.RECORDED: "recorded",
    Sort.STATE: "state",
}


class WatchTable(ScrollView, can_focus=True):
    """The streams being watched, one per row, with a cursor.

    The app sets `streams` (the hub's live dict) and calls `update_view()` at its repaint rate.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "cursor_first", "First", show=False),
        Binding("end", "cursor_last", "Last", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "watch-table--header",
        "watch-table--header-sorted",
        "watch-table--group",
        "watch-table--cursor",
        "watch-table--up",
        "watch-table--down",
        "watch-table--muted",
        "watch-table--live",
        "watch-table--warning",
        "watch-table--error",
    }

    @dataclass
    class Activated(Message):
        """A row was double-clicked: show its details."""

        key: StreamKey

    # The order of the rows: words to match, then the sort. Setting one re-sorts at once.
    filter_text: var[str] = var("", init=False)
    sort: var[Sort] = var(Sort.LIST, init=False)
    reverse: var[bool] = var(False, init=False)
    # The layout: the `[ui]` table's columns, grouping and compact mode.
    chosen: var[tuple[str, ...]] = var(COLUMN_IDS, init=False)
    group: var[Group] = var(Group.NONE, init=False)
    compact: var[bool] = var(False, init=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.streams: dict[StreamKey, StreamState] = {}
        self.order: list[StreamKey] = []  # the streams shown, top to bottom
        self.lines: list[StreamKey | GroupLine] = []  # the rows drawn: streams and group headings
        self._line_of: dict[StreamKey, int] = {}
        # A word shown as every stream's state while the recorder has not started them
        # ("checking", "offline"); `paused`: recording is paused, so no backfill is under way.
        self.placeholder: str | None = None
        self.paused = False
        self.cursor = 0
        self._index: dict[StreamKey, int] = {}
        self._cursor_key: StreamKey | None = None
        self._direction: dict[StreamKey, tuple[float, int]] = {}  # last close seen, its direction
        self._spark_cache: dict[StreamKey, tuple[tuple, tuple[str, int]]] = {}
        self.columns = COLUMNS  # those shown: fewer on a narrow terminal
        self._spark_width = SPARK_MIN
        self._styles: dict[str, Style] = {}
        self._groups: dict[tuple[StreamKey, Group], tuple[int, str]] = {}
        self._ticks = 0
        # The streams the order was made from: a stream added and another removed between two
        # sorts leave the count as it was, not the set (compared in 0.7 ms at 5,000 streams).
        self._sorted_keys: set[StreamKey] = set()
        # For measuring: bumped on every change a key makes, copied when a line is painted.
        self.generation = 0
        self.painted_generation = 0
        # Streams whose alert fired lately (the app keeps it): their symbol is marked with "!".
        self.marked: set[StreamKey] = set()

    # -- what the app calls -------------------------------------------------------------------

    @property
    def selected(self) -> StreamKey | None:
        """The stream under the cursor."""
        if 0 <= self.cursor < len(self.order):
            return self.order[self.cursor]
        return None

    @property
    def sort_label(self) -> str:
        """The order of the rows, in words."""
        return self.sort.label + (" (reversed)" if self.reverse else "")

    def update_view(self) -> None:
        """Re-read the streams: new order, price directions, then repaint what is on screen.

        A long list is re-sorted at every `LONG_LIST_EVERY`th call only (a second at 4 Hz:
        5,000 rows take tens of ms), unless streams came or went (even as many as went, so the
        count alone would not tell); keys re-sort at once."""
        self._ticks += 1
        long_list = len(self.streams) > LONG_LIST
        if (
            not long_list
            or self._ticks % LONG_LIST_EVERY == 0
            or self.streams.keys() != self._sorted_keys
        ):
            self._reorder()
        self._track_directions()
        self.refresh()

    def select(self, key: StreamKey) -> None:
        """Put the cursor on `key` (when it is shown) and scroll to it."""
        self._cursor_key = key
        self._reorder()
        self._scroll_to_cursor()
        self._changed()

    def cycle_sort(self) -> None:
        """Sort by the next order of the cycle, unreversed."""
        self.reverse = False
        self.sort = _SORT_CYCLE[(_SORT_CYCLE.index(self.sort) + 1) % len(_SORT_CYCLE)]

    def set_sort(self, sort: Sort) -> None:
        """Sort by `sort`; asked again for the same order, reverse it (a second header click)."""
        self.reverse = (not self.reverse) if sort is self.sort else False
        self.sort = sort

    def reverse_sort(self) -> None:
        self.reverse = not self.reverse

    def watch_sort(self) -> None:
        self._rearranged()

    def watch_reverse(self) -> None:
        self._rearranged()

    def watch_filter_text(self) -> None:
        self._rearranged()

    def watch_group(self) -> None:
        self._rearranged()

    def watch_chosen(self) -> None:
        self._fit()

    def watch_compact(self) -> None:
        self._fit()

    def cycle_group(self) -> None:
        """Group by the next way of the cycle: none, market, symbol."""
        groups = list(Group)
        self.group = groups[(groups.index(self.group) + 1) % len(groups)]

    def _rearranged(self) -> None:
        # At once, not at the next repaint: the key that changed the order is answered in the
        # frame it was pressed in.
        self._reorder()
        self._scroll_to_cursor()
        self._changed()

    # -- order ----------------------------------------------------------------------------------

    def _matches(self) -> list[StreamState]:
        terms = self.filter_text.lower().split()
        states = list(self.streams.values())
        if not terms:
            return states
        out = []
        for s in states:
            key = s.key
            hay = (
                f"{key.market.value}:{key.symbol.lower()}:{key.interval.value}:{key.kind.value} "
                f"{s.status.value}"
            )
            if all(t in hay for t in terms):
                out.append(s)
        return out

    def _reorder(self) -> None:
        self._sorted_keys = set(self.streams)
        states = self._matches()
        if self.sort is Sort.LIST:  # the streams' own order: nothing to sort
            if self.reverse:
                states.reverse()
        else:
            position = {k: i for i, k in enumerate(self.streams)}
            states.sort(key=self.sort.key_func(position), reverse=self.reverse)
        if self.group is Group.NONE:
            self.order = [s.key for s in states]
            self.lines = list(self.order)
        else:
            self._group_lines(states)
        self._index = {k: i for i, k in enumerate(self.order)}
        self._line_of = {k: i for i, k in enumerate(self.lines) if not isinstance(k, GroupLine)}
        if self._cursor_key in self._index:
            self.cursor = self._index[self._cursor_key]
        else:
            self.cursor = max(0, min(self.cursor, len(self.order) - 1))
            self._cursor_key = self.selected
        self._fit_virtual_size()

    def _group_lines(self, states: list[StreamState]) -> None:
        """Order and lines grouped: each group in the sorted order within, groups by name."""
        groups: dict[tuple[int, str], list[StreamState]] = {}
        cache = self._groups
        if len(cache) > 2 * len(self.streams) + 64:
            cache.clear()  # of streams long gone
        group = self.group
        for state in states:
            key = state.key
            of = cache.get((key, group))
            if of is None:
                of = cache[(key, group)] = _group_of(key, group)
            groups.setdefault(of, []).append(state)
        order: list[StreamKey] = []
        lines: list[StreamKey | GroupLine] = []
        for (_, name), members in sorted(groups.items(), key=lambda item: item[0]):
            live = sum(1 for s in members if s.status in _RECEIVING)
            lines.append(GroupLine(name, len(members), live))
            keys = [s.key for s in members]
            order += keys
            lines += keys
        self.order, self.lines = order, lines

    def _fit_virtual_size(self) -> None:
        size = Size(_fixed_width(self.columns) + self._spark_width, len(self.lines) + 1)
        if size != self.virtual_size:
            self.virtual_size = size

    def _track_directions(self) -> None:
        """Whether each shown row's price last moved up or down (only shown rows: a row scrolled
        into view starts without a direction)."""
        direction, streams = self._direction, self.streams
        top = int(self.scroll_y)
        for key in self.lines[top : top + self._rows_visible() + 1]:
            if isinstance(key, GroupLine):
                continue
            state = streams.get(key)
            if state is None:
                continue
            k = state.forming
            if k is None:
                continue
            last = direction.get(key)
            if last is None:
                direction[key] = (k.close, 0)
            elif k.close != last[0]:
                direction[key] = (k.close, 1 if k.close > last[0] else -1)
        if len(direction) > len(self.streams):
            for key in [k for k in direction if k not in self.streams]:
                del direction[key]
                self._spark_cache.pop(key, None)

    def _changed(self) -> None:
        self.generation += 1
        self.refresh()

    # -- cursor -----------------------------------------------------------------------------

    def _move_to(self, row: int) -> None:
        if not self.order:
            return
        self.cursor = max(0, min(row, len(self.order) - 1))
        self._cursor_key = self.order[self.cursor]
        self._scroll_to_cursor()
        self._changed()

    def _rows_visible(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def _scroll_to_cursor(self) -> None:
        top = int(self.scroll_y)
        rows = self._rows_visible()
        line = self._line_of.get(self._cursor_key, self.cursor) if self._cursor_key else 0
        if line - 1 < top and line > 0 and isinstance(self.lines[line - 1], GroupLine):
            line -= 1  # the group's heading comes into view with its first stream
        if line < top:
            self.scroll_to(y=line, animate=False, immediate=True)
        elif line >= top + rows:
            self.scroll_to(y=line - rows + 1, animate=False, immediate=True)

    def action_cursor_up(self) -> None:
        self._move_to(self.cursor - 1)

    def action_cursor_down(self) -> None:
        self._move_to(self.cursor + 1)

    def action_page_up(self) -> None:
        self._move_to(self.cursor - self._rows_visible())

    def action_page_down(self) -> None:
        self._move_to(self.cursor + self._rows_visible())

    def action_cursor_first(self) -> None:
        self._move_to(0)

    def action_cursor_last(self) -> None:
        self._move_to(len(self.order) - 1)

    async def _on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            column = self._column_at(offset.x + int(self.scroll_x))
            if column is not None and column.sort is not None:
                self.set_sort(Sort[column.sort.upper()])
            return
        line = int(self.scroll_y) + offset.y - 1
        if line < len(self.lines):
            key = self.lines[line]
            if isinstance(key, GroupLine):
                return
            self._move_to(self._index[key])
            if event.chain >= 2:
                self.post_message(self.Activated(key))

    def _column_at(self, x: int) -> Column | None:
        left = 1
        for column in self.columns:
            width = column.width or self._spark_width
            if left <= x < left + width:
                return column
            left += width + 1
        return None

    def on_resize(self, event: events.Resize) -> None:
        self._fit()

    def _fit(self) -> None:
        width = self.scrollable_content_region.width
        self.columns, self._spark_width = fit_columns(width, self.chosen, compact=self.compact)
        self._spark_cache.clear()
        self._fit_virtual_size()
        self._scroll_to_cursor()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()

    # -- painting ----------------------------------------------------------------------------

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self.get_component_rich_style(
                f"watch-table--{name}", partial=True
            )
        return style

    def render_line(self, y: int) -> Strip:
        self.painted_generation = self.generation
        width = self.scrollable_content_region.width
        scroll_x, scroll_y = self.scroll_offset
        base = self.rich_style
        if y == 0:
            segments = self._header(base)
        else:
            line = scroll_y + y - 1
            if line >= len(self.lines):
                return Strip.blank(width, base)
            key = self.lines[line]
            if isinstance(key, GroupLine):
                segments = self._group_heading(key, base + self._style("group"))
                strip = Strip(segments).crop(0, width)
                return strip.extend_cell_length(width, base + self._style("group"))
            state = self.streams.get(key)
            if state is None:
                return Strip.blank(width, base)
            selected = self._index.get(key) == self.cursor
            segments = self._row(state, base + self._style("cursor") if selected else base)
        strip = Strip(segments)
        return strip.crop(scroll_x, scroll_x + width).extend_cell_length(width, base)

    def _header(self, base: Style) -> list[Segment]:
        style = base + self._style("header")
        sorted_style = base + self._style("header-sorted")
        arrow = "↑" if self.reverse else "↓"
        segments = [Segment(" ", style)]
        for column in self.columns:
            width = column.width or self._spark_width
            title = column.title
            is_sorted = column.id == _SORTED_COLUMN.get(self.sort)
            if is_sorted:
                title = f"{arrow}{title}" if column.right else f"{title}{arrow}"
            text = title.rjust(width) if column.right else title.ljust(width)
            segments.append(Segment(text[:width], sorted_style if is_sorted else style))
            segments.append(Segment(" ", style))
        return segments

    def _group_heading(self, group: GroupLine, style: Style) -> list[Segment]:
        streams = "stream" if group.streams == 1 else "streams"
        return [Segment(f" ▾ {group.name} · {group.streams} {streams}, {group.live} live", style)]

    def _row(self, state: StreamState, base: Style) -> list[Segment]:
        key = state.key
        k = state.forming
        muted = base + self._style("muted")
        up, down = base + self._style("up"), base + self._style("down")
        sign_style = {1: up, -1: down, 0: base}
        direction = self._direction.get(key, (0.0, 0))[1]
        if k is not None:
            change, sign = fmt.change_pct(k.close, k.open)
            has_volume = key.kind.has_volume
            cells = [
                (fmt.price(k.close), sign_style[direction]),
                (change, sign_style[sign]),
                (fmt.price(k.high), base),
                (fmt.price(k.low), base),
                (fmt.compact(k.volume) if has_volume else "", base),
                (fmt.compact(k.trades) if has_volume else "", base),
            ]
        else:
            cells = [("—", muted)] * 6
        spark, spark_sign = self._spark(state)
        status = state.status
        label = state_label(state, self.placeholder, paused=self.paused)
        if self.placeholder is not None:
            status = StreamStatus.ERROR if self.placeholder == "offline" else StreamStatus.WAITING
        elif self.paused and status is StreamStatus.BACKFILLING:
            status = StreamStatus.LIVE
        status_style = {
            StreamStatus.LIVE: base + self._style("live"),
            StreamStatus.STALE: base + self._style("warning"),
            StreamStatus.RECONNECTING: base + self._style("warning"),
            StreamStatus.BACKFILLING: base + self._style("warning"),
            StreamStatus.ERROR: base + self._style("error"),
        }.get(status, muted)
        texts = dict(zip(("last", "change", "high", "low", "volume", "trades"), cells, strict=True))
        texts.update(
            market=(key.market.value, muted),
            symbol=(
                (f"!{symbol_cell(key)}", base + self._style("warning"))
                if key in self.marked
                else (symbol_cell(key), base)
            ),
            interval=(key.interval.value, base),
            spark=(spark, sign_style[spark_sign]),
            recorded=(fmt.compact(state.recorded), base),
            state=(label, status_style),
        )
        segments = [Segment(" ", base)]
        for column in self.columns:
            text, style = texts[column.id]
            width = column.width or self._spark_width
            if len(text) > width:
                text = text[: width - 1] + "…"
            segments.append(
                Segment(text.rjust(width) if column.right else text.ljust(width), style)
            )
            segments.append(Segment(" ", base))
        return segments

    def row_text(self, key: StreamKey) -> str | None:
        """The row of `key` as it is drawn, in plain text (None when the stream is not listed)."""
        state = self.streams.get(key)
        if state is None or key not in self._index:
            return None
        return "".join(segment.text for segment in self._row(state, Style()))

    def row_cells(self, key: StreamKey) -> dict[str, str] | None:
        """The cells of `key`'s row as drawn, by column id, without padding."""
        state = self.streams.get(key)
        if state is None or key not in self._index:
            return None
        cells = self._row(state, Style())[1::2]  # a space, then each cell followed by a space
        return {
            column.id: cell.text.strip() for column, cell in zip(self.columns, cells, strict=True)
        }

    def _spark(self, state: StreamState) -> tuple[str, int]:
        closed = state.closed
        width = self._spark_width
        tag = (len(closed), closed[-1].open_time if closed else None, width)
        cached = self._spark_cache.get(state.key)
        if cached is not None and cached[0] == tag:
            return cached[1]
        closes = [c.close for c in list(closed)[-SPARK_CANDLES:]]
        sign = 0
        if len(closes) >= 2 and closes[-1] != closes[0]:
            sign = 1 if closes[-1] > closes[0] else -1
        result = (sparkline(closes, width), sign)
        self._spark_cache[state.key] = (tag, result)
        return result


# Statuses of a stream whose live events arrive (a backfill runs beside them).
_RECEIVING = frozenset({StreamStatus.LIVE, StreamStatus.BACKFILLING})


def receiving(state: StreamState) -> bool:
    """Whether the stream's live events arrive: live, or live while older candles are fetched."""
    return state.status in _RECEIVING


def state_label(state: StreamState, placeholder: str | None = None, *, paused: bool = False) -> str:
    """The State cell, at most 13 characters: the status, with the candles still to fetch while
    backfilling (a paused recorder fetches nothing: its streams are live); `placeholder` stands
    for every state while the recorder has not started ("checking", "offline")."""
    if placeholder is not None:
        return placeholder
    if state.status is StreamStatus.BACKFILLING:
        if paused:
            return StreamStatus.LIVE.value
        if state.backfill:
            return f"backfill {fmt.count4(state.backfill)}"
    return state.status.value


def symbol_cell(key: StreamKey) -> str:
    """The symbol, with its kind as a short tag (`BTCUSDT·mark`); trade klines have none."""
    tag = fmt.kind_tag(key.kind.value)
    return f"{key.symbol}·{tag}" if tag else key.symbol

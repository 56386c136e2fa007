"""The connections panel: one line per WebSocket connection, what it is doing and how well."""

from __future__ import annotations

import math
from collections.abc import Mapping

from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from kline_tui.binance.connection import ConnectionState, ConnectionStatus
from kline_tui.model import Market
from kline_tui.ui import format as fmt

_NO_CONNECTION_YET = "no connection yet: the watch list is empty or still being checked"

__all__ = ["ConnectionsPanel", "connection_rows", "describe_state", "format_lag"]


def describe_state(status: ConnectionStatus, now: float) -> tuple[str, str]:
    """The connection's state in words, and the style name to show it with."""
    state = status.state
    if state is ConnectionState.LIVE:
        since = now - status.connected_at if status.connected_at is not None else None
        return f"connected {fmt.duration(since)}", "green"
    if state is ConnectionState.CONNECTING:
        attempt = f" (attempt {status.attempt})" if status.attempt else ""
        return f"connecting{attempt}…", "yellow"
    if state is ConnectionState.RECONNECTING:
        wait = None if status.next_attempt_at is None else status.next_attempt_at - now
        when = f"in {math.ceil(wait)} s" if wait is not None and wait >= 0.5 else "now"
        return f"reconnecting {when}, attempt {status.attempt}", "yellow"
    return "closed", "dim"


def format_lag(lag_ms: float | None) -> str:
    if lag_ms is None:
        return "—"
    if abs(lag_ms) < 1000:
        return f"{lag_ms:.0f} ms"
    if abs(lag_ms) < 60_000:
        return f"{lag_ms / 1000:.1f} s"
    # Minutes or more is a clock apart, not a network delay: show it as a span.
    return ("-" if lag_ms < 0 else "") + fmt.duration(abs(lag_ms) / 1000)


# One line of the panel, as shown: market, id, state, its style, streams, rate, lag,
# reconnects, reason.
Row = tuple[str, str, str, str, str, str, str, str, str]
# Below this width only the market, state, rate and lag are shown.
_NARROW_BELOW = 76


# How fast each market's exchange clock runs against the local one: one rate for all, or per market.
ClockRate = float | Mapping[Market, float]


def _real_lag(status: ConnectionStatus, clock_rate: ClockRate) -> float | None:
    if status.lag_ms is None:
        return None
    rate = clock_rate if isinstance(clock_rate, float | int) else clock_rate.get(status.market, 1.0)
    return status.lag_ms / rate if math.isfinite(rate) and rate > 0 else status.lag_ms


def connection_rows(
    statuses: list[ConnectionStatus], now: float, clock_rate: ClockRate = 1.0
) -> tuple[Row, ...]:
    """The panel's lines from the hub's connection statuses; `now` is the monotonic clock.

    `clock_rate` is how fast the exchange's clock runs, as the market's clock measured it (a
    simulator's speed): a lag measured in exchange ms on a clock 60 times fast is shown in real
    time, a delay a person can judge. An attached UI's lags come in real time already (1)."""
    return tuple(
        (
            s.market.value,
            f"#{s.conn_id}",
            *describe_state(s, now),
            f"{s.streams:,}",
            f"{s.frames_per_s(now):,.0f}",
            format_lag(_real_lag(s, clock_rate)),
            f"{s.reconnects}",
            s.last_error or "",
        )
        for s in sorted(statuses, key=lambda s: (s.market.value, s.conn_id))
    )


class ConnectionsPanel(Static):
    """Market, state, streams carried, messages per second, lag and reconnects of each connection.

    The app sets `rows` at every repaint; the table is drawn again only when a cell changed or
    the panel became narrow or wide.
    """

    rows: reactive[tuple[Row, ...]] = reactive(tuple)
    narrow: reactive[bool] = reactive(False)
    empty: reactive[str] = reactive(_NO_CONNECTION_YET)  # what is said while there are none

    def on_resize(self) -> None:
        self.narrow = 0 < self.size.width < _NARROW_BELOW

    @property
    def lines(self) -> list[str]:
        """What each line shows, in plain text: market, id, state, streams, rate, lag,
        reconnects, reason."""
        return [" ".join(cell for i, cell in enumerate(row) if i != 3) for row in self.rows]

    def show(
        self,
        statuses: list[ConnectionStatus],
        now: float,
        *,
        empty: str | None = None,
        clock_rate: ClockRate = 1.0,
    ) -> None:
        """Show the hub's connection statuses; `now` is the monotonic clock; `empty` is what
        to say when there are none (by default: none yet); `clock_rate` as `connection_rows`."""
        self.empty = empty or _NO_CONNECTION_YET
        self.rows = connection_rows(statuses, now, clock_rate)

    def watch_rows(self) -> None:
        self.update(self._table())

    def watch_narrow(self) -> None:
        self.update(self._table())

    def watch_empty(self) -> None:
        if not self.rows:
            self.update(self._table())

    def _table(self) -> Table | Text:
        if not self.rows:
            return Text(self.empty, style="dim")
        narrow = self.narrow
        table = Table(
            box=None, padding=(0, 1), expand=True, show_edge=False, header_style="bold dim"
        )
        table.add_column("Market", no_wrap=True)
        if not narrow:
            table.add_column("Conn", no_wrap=True)
        table.add_column("State", no_wrap=True, overflow="ellipsis")
        if not narrow:
            table.add_column("Streams", justify="right", no_wrap=True)
        table.add_column("Msg/s", justify="right", no_wrap=True)
        table.add_column("Lag", justify="right", no_wrap=True)
        if not narrow:
            table.add_column("Reconn.", justify="right", no_wrap=True)
            table.add_column("Last reason", ratio=1, no_wrap=True, overflow="ellipsis", style="dim")
        for market, conn, state, style, streams, rate, lag, reconnects, reason in self.rows:
            if narrow:  # "connected 1m23s" reads "up 1m23s": the state word stays whole
                state = state.replace("connected ", "up ").replace("reconnecting", "retry")
                cells: list[str | Text] = [market, Text(state, style=style), rate, lag]
            else:
                cells = [market, conn, Text(state, style=style), streams, rate, lag]
                cells += [reconnects, reason]
            table.add_row(*cells)
        return table

"""The hub: owns every connection, packs streams into them, and keeps each stream's live state.

Streams of one market share a connection until it carries the market's limit (1,024), then the
next one opens. Adding or removing a stream touches only the connection that carries it. Forming
candles update the live state in place (cheap, coalesced by nature); closed candles are handed on
to the ledger, never dropped.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from kline_tui.binance.connection import Backoff, Connection, ConnectionState, ConnectionStatus
from kline_tui.binance.markets import Endpoints
from kline_tui.binance.wire import WireKline
from kline_tui.model import Market, StreamKey
from kline_tui.recorder.events import EventLog
from kline_tui.recorder.ledger import Ledger

__all__ = ["Hub", "StreamState", "StreamStatus"]

log = logging.getLogger(__name__)

SPARK_LENGTH = 120  # closed candles kept per stream for sparklines and charts


class StreamStatus(enum.StrEnum):
    SUBSCRIBING = "subscribing"
    WAITING = "waiting"  # subscribed, no event yet
    LIVE = "live"
    STALE = "stale"
    RECONNECTING = "reconnecting"
    BACKFILLING = "backfilling"
    ERROR = "error"


@dataclass(slots=True)
class StreamState:
    """Everything known live about one stream; the UI reads it, the core writes it."""

    key: StreamKey
    status: StreamStatus = StreamStatus.SUBSCRIBING
    forming: WireKline | None = None  # the latest update, forming or closed
    event_time: int | None = None  # exchange time of the latest event
    received_at: float | None = None  # local monotonic time of the latest event
    updates: int = 0
    closed: collections.deque = field(default_factory=lambda: collections.deque(maxlen=SPARK_LENGTH))
    recorded: int = 0  # closed candles handed to the sink
    duplicates: int = 0
    gaps: int = 0
    backfill: int = 0  # candles waiting to be fetched from REST
    error: str | None = None
    conn_id: int | None = None


class Hub:
    """Owns the connections of all markets and the live state of every stream."""

    def __init__(
        self,
        endpoints: dict[Market, Endpoints],
        events: EventLog,
        ledger: Ledger,
        *,
        ping_interval_s: float | None = 20.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.events = events
        self.ledger = ledger
        self.ping_interval_s = ping_interval_s
        self.backoff = backoff
        self.streams: dict[StreamKey, StreamState] = {}
        self.connections: list[Connection] = []
        self._carrier: dict[StreamKey, Connection] = {}
        self.malformed = 0
        self._malformed_logged_at = 0.0
        self._closing: set[asyncio.Future] = set()

    # -- requests -----------------------------------------------------------------------------

    def add(self, keys: Iterable[StreamKey]) -> list[StreamKey]:
        """Watch these streams (those not watched yet); returns the ones added."""
        added: dict[Market, list[StreamKey]] = collections.defaultdict(list)
        for key in keys:
            if key not in self.streams:
                self.streams[key] = StreamState(key)
                added[key.market].append(key)
        for market, market_keys in added.items():
            self._place(market, market_keys)
        return [k for ks in added.values() for k in ks]

    def remove(self, keys: Iterable[StreamKey]) -> list[StreamKey]:
        """Stop watching these streams; returns the ones removed."""
        removed = []
        for key in keys:
            if self.streams.pop(key, None) is None:
                continue
            removed.append(key)
            conn = self._carrier.pop(key, None)
            if conn is not None:
                conn.remove([key])
        for conn in [c for c in self.connections if not c.keys]:
            # A connection left with nothing to carry is closed rather than kept idle.
            self.connections.remove(conn)
            self.events.info(f"{conn.market.value} connection {conn.status.conn_id} closed: no streams left")
            task = asyncio.ensure_future(conn.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return removed

    def _place(self, market: Market, keys: list[StreamKey]) -> None:
        """Pack new streams into the market's open connections, opening more when they are full."""
        pending = list(keys)
        for conn in self.connections:
            if not pending:
                break
            if conn.market is market and conn.room > 0:
                batch, pending = pending[: conn.room], pending[conn.room :]
                self._assign(conn, batch)
        while pending:
            conn = Connection(
                market,
                self.endpoints[market].ws,
                self,
                backoff=self.backoff,
                ping_interval_s=self.ping_interval_s,
            )
            batch, pending = pending[: conn.capacity], pending[conn.capacity :]
            self.connections.append(conn)
            self._assign(conn, batch)
            conn.start()

    def _assign(self, conn: Connection, keys: list[StreamKey]) -> None:
        for key in keys:
            self._carrier[key] = conn
            self.streams[key].conn_id = conn.status.conn_id
        conn.add(keys)

    async def close(self) -> None:
        """Close every connection."""
        conns, self.connections = self.connections, []
        for conn in conns:
            await conn.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def connection_status(self) -> list[ConnectionStatus]:
        return [c.status for c in self.connections]

    # -- what the connections report ----------------------------------------------------------

    def on_kline(self, key: StreamKey, event_time: int, kline: WireKline) -> None:
        state = self.streams.get(key)
        if state is None:
            return
        state.forming = kline
        state.event_time = event_time
        state.received_at = time.monotonic()
        state.updates += 1
        if state.status is not StreamStatus.LIVE and state.status is not StreamStatus.BACKFILLING:
            state.status = StreamStatus.LIVE
            state.error = None
        if kline.closed:
            if self.ledger.accept(key, kline):
                state.closed.append(kline)
                state.recorded += 1
            else:
                state.duplicates += 1
        else:
            self.ledger.observe(key, kline.open_time)

    def on_subscribed(self, conn: Connection, keys: list[StreamKey]) -> None:
        for key in keys:
            state = self.streams.get(key)
            if state is not None and state.status in (StreamStatus.SUBSCRIBING, StreamStatus.RECONNECTING):
                state.status = StreamStatus.WAITING
        if keys and conn.status.state is ConnectionState.LIVE:
            self.events.debug(f"{conn.market.value} connection {conn.status.conn_id}: subscribed {len(keys)} streams")

    def on_state(self, conn: Connection, message: str | None) -> None:
        st = conn.status
        label = f"{conn.market.value} connection {st.conn_id}"
        if st.state is ConnectionState.RECONNECTING:
            for key in conn.keys:
                state = self.streams.get(key)
                if state is not None:
                    state.status = StreamStatus.RECONNECTING
            if message:
                self.events.warning(f"{label}: {message}")
        elif st.state is ConnectionState.LIVE and message:
            self.events.info(f"{label}: {message}")
        elif st.state is ConnectionState.CONNECTING:
            self.events.info(f"{label}: connecting to {conn.ws_base}")

    def on_malformed(self, conn: Connection, reason: str) -> None:
        self.malformed += 1
        now = time.monotonic()
        if now - self._malformed_logged_at >= 5.0:  # a flood of garbage must not flood the log
            self._malformed_logged_at = now
            self.events.warning(
                f"{conn.market.value} connection {conn.status.conn_id}: dropped a malformed frame "
                f"({reason}); {self.malformed} so far"
            )

    def on_control_error(self, conn: Connection, keys: list[StreamKey], message: str) -> None:
        for key in keys:
            state = self.streams.get(key)
            if state is not None:
                state.status = StreamStatus.ERROR
                state.error = message
        self.events.error(f"{conn.market.value} connection {conn.status.conn_id}: {message}")

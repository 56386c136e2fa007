"""The hub: owns every connection, packs streams into them, and keeps each stream's live state.

Streams of one market share a connection until it carries the market's limit (1,024), then the
next one opens. Adding or removing a stream touches only the connection that carries it. Forming
candles update the live state in place (cheap, coalesced by nature); closed candles are handed on
to the ledger, never dropped.

A watchdog runs once a second. A stream silent for many of its push periods is stale (a route
that acknowledges and then sends nothing looks exactly like this); a connection whose streams
are all stale is replaced, a stale stream on an otherwise healthy connection is subscribed again.
Connections are replaced before the exchange's 24 h cut (staggered) and at once on a shutdown
notice, always make before break: the successor subscribes everything first, then the old one
closes. Both deliver meanwhile; the ledger drops the doubles.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kline_tui.binance.connection import (
    CLOSE_TIMEOUT_S,
    ConnectBudget,
    Connection,
    ConnectionState,
    ConnectionStatus,
)
from kline_tui.binance.markets import Endpoints
from kline_tui.binance.wire import WireKline
from kline_tui.model import CandleLike, Market, StreamKey
from kline_tui.recorder.events import EventLog
from kline_tui.recorder.ledger import Ledger
from kline_tui.retry import Backoff, Spawn, plain_spawn

__all__ = ["ConnectionTotals", "Hub", "StreamState", "StreamStatus"]

log = logging.getLogger(__name__)

SPARK_LENGTH = 120  # closed candles kept per stream for sparklines and charts
STALE_PERIODS = 10  # push periods of silence after which a stream is stale...
STALE_MIN_S = 5.0  # ...but never sooner than this
ROTATE_AFTER_S = 23 * 3600.0  # replace connections well before Binance's 24 h cut
ROTATE_STAGGER_S = 600.0  # successive connections rotate this much apart


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
    closed: collections.deque[CandleLike] = field(
        default_factory=lambda: collections.deque(maxlen=SPARK_LENGTH)
    )
    recorded: int = 0  # closed candles (live or backfilled) the sink took
    duplicates: int = 0
    gaps: int = 0  # holes found in what was received (the ledger's count, every second)
    stalls: int = 0  # times the watchdog found it silent
    backfill: int = 0  # candles waiting to be fetched from REST
    implausible: int = 0  # frames refused as impossible candles (never stored, never trusted)
    error: str | None = None
    conn_id: int | None = None


@dataclass(slots=True)
class ConnectionTotals:
    """One market's connection counters since start, those of connections closed and replaced
    included: they only grow, however often connections are replaced."""

    frames: int = 0
    malformed: int = 0
    reconnects: int = 0

    def add(self, status: ConnectionStatus) -> None:
        self.frames += status.frames
        self.malformed += status.malformed
        self.reconnects += status.reconnects


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
        rotate_after_s: float = ROTATE_AFTER_S,
        stale_periods: int = STALE_PERIODS,
        keep_closed: int = SPARK_LENGTH,
        spawn: Spawn | None = None,
        exchange_clock: Callable[[Market], int | None] | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.spawn = spawn  # the supervisor's: every connection and the watchdog run under it
        # `exchange_clock(market)`: the exchange's current time in ms, or None while unknown;
        # connections refuse events too far from it.
        self.exchange_clock = exchange_clock
        self.events = events
        self.ledger = ledger
        self.ping_interval_s = ping_interval_s
        self.backoff = backoff
        self.rotate_after_s = rotate_after_s
        self.stale_periods = stale_periods
        # Closed candles kept per stream for the UI's sparklines and charts (about 500 bytes each:
        # 120 for 2,000 streams is 120 MB); headless recording keeps none.
        self.keep_closed = keep_closed
        self.streams: dict[StreamKey, StreamState] = {}
        self.connections: list[Connection] = []
        self._carrier: dict[StreamKey, Connection] = {}
        self._successor: dict[Connection, Connection] = {}  # retiring -> replacement
        self._budgets = {market: ConnectBudget() for market in Market}
        self._opened = 0  # connections ever opened, for staggering rotations
        self.malformed = 0
        self.stalls_detected = 0
        self.stall_detect_s: list[float] = []  # silence before each stale verdict
        self.rotations = 0
        self._malformed_logged_at = 0.0
        self._closing: set[asyncio.Future[None]] = set()
        # Counters of connections closed for good, and the statuses of those still closing
        # (folded in once their close ends), so that `connection_totals` never goes down.
        self._gone: dict[Market, ConnectionTotals] = {}
        self._leaving: dict[int, ConnectionStatus] = {}
        self._watchdog: asyncio.Task[None] | None = None
        # Called with each closed candle kept in a stream's `closed` (the service's events socket
        # forwards them); a listener must be cheap and must not raise.
        self.closed_listeners: list[Callable[[StreamKey, CandleLike], None]] = []

    def start(self) -> None:
        """Start the watchdog (connections start as streams are added)."""
        self._watchdog = (self.spawn or plain_spawn)("watchdog", self._watch)

    # -- requests -----------------------------------------------------------------------------

    def add(self, keys: Iterable[StreamKey]) -> list[StreamKey]:
        """Watch these streams (those not watched yet); returns the ones added."""
        added: dict[Market, list[StreamKey]] = collections.defaultdict(list)
        for key in keys:
            if key not in self.streams:
                self.streams[key] = StreamState(
                    key, closed=collections.deque(maxlen=self.keep_closed)
                )
                added[key.market].append(key)
        for market, market_keys in added.items():
            # Kinds with no WebSocket stream are polled over REST (recorder.poller): they have
            # a live state here, and no connection.
            streamed = [k for k in market_keys if k.has_stream]
            if streamed:
                self._place(market, streamed)
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
        for conn in [c for c in self.connections if not c.keys and not c.status.retiring]:
            # A connection left with nothing to carry is closed rather than kept idle.
            self.events.info(f"{conn.name} closed: no streams left")
            self._retire(conn)
        return removed

    def _retire(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
        self._successor.pop(conn, None)
        task = asyncio.ensure_future(conn.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        self._leave(conn, task)

    def _leave(self, conn: Connection, closing: asyncio.Future[None]) -> None:
        status = self._leaving[conn.status.conn_id] = conn.status
        closing.add_done_callback(lambda _: self._fold(status))

    def _fold(self, status: ConnectionStatus) -> None:
        if self._leaving.pop(status.conn_id, None) is not None:
            self._gone.setdefault(status.market, ConnectionTotals()).add(status)

    def connection_totals(self) -> dict[Market, ConnectionTotals]:
        """Frames, malformed frames and reconnects per market, of every connection ever opened."""
        totals = {
            m: ConnectionTotals(t.frames, t.malformed, t.reconnects) for m, t in self._gone.items()
        }
        for status in [*(c.status for c in self.connections), *self._leaving.values()]:
            totals.setdefault(status.market, ConnectionTotals()).add(status)
        return totals

    def _new_connection(self, market: Market) -> Connection:
        conn = Connection(
            market,
            self.endpoints[market].ws,
            self,
            backoff=self.backoff,
            ping_interval_s=self.ping_interval_s,
            budget=self._budgets[market],
            clock=self.exchange_clock,
        )
        # Stagger planned rotations so connections are not all replaced in the same minute.
        conn.rotate_at_age = self.rotate_after_s - (self._opened % 6) * min(
            ROTATE_STAGGER_S, self.rotate_after_s / 12
        )
        self._opened += 1
        self.connections.append(conn)
        return conn

    def rotate(self, old: Connection, reason: str, *, silent: bool = False) -> None:
        """Replace a connection, make before break: the old one closes once the new one is live."""
        if old.status.retiring or old not in self.connections:
            return
        old.status.retiring = True
        self.rotations += 1
        new = self._new_connection(old.market)
        if silent:
            new.silent_rotations = old.silent_rotations + 1
        self._successor[old] = new
        self.events.info(
            f"{old.name}: replacing it ({reason}) with connection {new.status.conn_id}"
        )
        self._assign(new, old.keys)
        new.start(self.spawn)

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
            conn = self._new_connection(market)
            batch, pending = pending[: conn.capacity], pending[conn.capacity :]
            self._assign(conn, batch)
            conn.start(self.spawn)

    def _assign(self, conn: Connection, keys: list[StreamKey]) -> None:
        for key in keys:
            self._carrier[key] = conn
            self.streams[key].conn_id = conn.status.conn_id
        conn.add(keys)

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop the watchdog and close every connection, all at once, within about `timeout_s`
        (a connection whose server does not let go in time is aborted)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.wait([self._watchdog], timeout=timeout_s)
        conns, self.connections = self.connections, []
        closing: list[asyncio.Future[None]] = [
            asyncio.ensure_future(conn.close(timeout_s / 2)) for conn in conns
        ]
        for conn, task in zip(conns, closing, strict=True):
            self._leave(conn, task)
        closing += list(self._closing)
        if closing:
            await asyncio.wait(closing, timeout=timeout_s)

    def connection_status(self) -> list[ConnectionStatus]:
        return [c.status for c in self.connections]

    # -- what the connections report ----------------------------------------------------------

    def on_kline(
        self,
        key: StreamKey,
        event_time: int,
        kline: WireKline,
        now: float | None = None,
        source: str = "ws",
    ) -> None:
        """An update of a stream's candle (`source` "rest" from the poller): the live state
        takes it, the ledger a closed one."""
        state = self.streams.get(key)
        if state is None:
            return
        state.forming = kline
        state.event_time = event_time
        state.received_at = time.monotonic() if now is None else now
        state.updates += 1
        status = state.status
        if status is not StreamStatus.LIVE and status is not StreamStatus.BACKFILLING:
            state.status = StreamStatus.LIVE
            state.error = None
        if kline.closed:
            if self.ledger.accept(key, kline, source):  # `recorded` counts what the sink took
                state.closed.append(kline)
                for listener in self.closed_listeners:
                    listener(key, kline)
            else:
                state.duplicates += 1
        else:
            self.ledger.observe(key, kline.open_time)

    def on_subscribed(self, conn: Connection, keys: list[StreamKey]) -> None:
        for key in keys:
            state = self.streams.get(key)
            if state is not None and state.status in (
                StreamStatus.SUBSCRIBING,
                StreamStatus.RECONNECTING,
            ):
                state.status = StreamStatus.WAITING
        self._handover()
        if keys and conn.status.state is ConnectionState.LIVE:
            self.events.debug(f"{conn.name}: subscribed {len(keys)} streams")

    def on_state(self, conn: Connection, message: str | None) -> None:
        st = conn.status
        label = conn.name
        if st.state is ConnectionState.RECONNECTING:
            for key in conn.keys:
                state = self.streams.get(key)
                if state is not None and self._carrier.get(key) is conn:
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
                f"{conn.name}: dropped a malformed frame ({reason}); {self.malformed} so far"
            )

    def on_implausible(self, conn: Connection, key: StreamKey, reason: str) -> None:
        """An event that cannot be a real candle: counted, logged once per stream, dropped."""
        self.malformed += 1
        state = self.streams.get(key)
        if state is None:
            return
        state.implausible += 1
        if state.implausible == 1:
            self.events.warning(
                f"{key}: dropped an impossible candle ({reason}); "
                "further ones on this stream are only counted"
            )

    def on_shutdown_notice(self, conn: Connection) -> None:
        self.rotate(conn, "the server announced a shutdown")

    def on_control_error(self, conn: Connection, keys: list[StreamKey], message: str) -> None:
        for key in keys:
            state = self.streams.get(key)
            if state is not None:
                state.status = StreamStatus.ERROR
                state.error = message
        self.events.error(f"{conn.name}: {message}")

    # -- watchdog, rotation ------------------------------------------------------------------

    def _handover(self) -> None:
        """Close each retiring connection whose successor now carries all of its streams."""
        for old, new in list(self._successor.items()):
            if new.fully_subscribed:
                self.events.info(
                    f"{old.name}: handed over to connection {new.status.conn_id}, closing it"
                )
                self._retire(old)

    def stale_after_s(self, key: StreamKey) -> float:
        return max(STALE_MIN_S, self.stale_periods * key.push_period_ms / 1000)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.check_health(time.monotonic())
            except Exception as exc:  # noqa: BLE001 - the watchdog must outlive any bug it meets
                self.events.error(f"watchdog: {type(exc).__name__}: {exc}")

    def check_health(self, now: float) -> None:
        """One watchdog round: mark silent streams stale, heal or replace their connections,
        and show which streams have candles still to fetch and how many gaps they had."""
        self._handover()
        for key, state in self.streams.items():
            ledger = self.ledger.streams.get(key)
            state.backfill = ledger.missing_count() if ledger is not None else 0
            state.gaps = ledger.gaps if ledger is not None else 0
            if state.backfill and state.status is StreamStatus.LIVE:
                state.status = StreamStatus.BACKFILLING
            elif not state.backfill and state.status is StreamStatus.BACKFILLING:
                state.status = StreamStatus.LIVE
        for conn in list(self.connections):
            st = conn.status
            if st.retiring or st.state is not ConnectionState.LIVE or st.connected_at is None:
                continue
            if now - st.connected_at >= conn.rotate_at_age:
                self.rotate(conn, f"{now - st.connected_at:.0f} s old, before the 24 h cut")
                continue
            keys = [k for k in conn.keys if self._carrier.get(k) is conn]
            stale, newly_stale = [], []
            for key in keys:
                state = self.streams[key]
                heard = state.received_at if state.received_at is not None else st.connected_at
                heard = max(heard, st.connected_at)
                silent = now - heard
                if silent < self.stale_after_s(key):
                    continue
                stale.append(key)
                if state.status is not StreamStatus.STALE:
                    newly_stale.append(key)
                    state.status = StreamStatus.STALE
                    state.stalls += 1
                    self.stalls_detected += 1
                    self.stall_detect_s.append(silent)
                    self.events.warning(f"{key}: silent for {silent:.0f} s, stale")
            if len(stale) < len(keys):
                conn.silent_rotations = 0
                if newly_stale:
                    conn.resubscribe(newly_stale)
                continue
            # Everything is silent: replace the connection, backing off if its predecessors were
            # replaced for silence too (a market that is down must not cause a connection storm).
            patience = min(3600.0, 2**conn.silent_rotations * max(map(self.stale_after_s, keys)))
            if (
                now - max(st.connected_at, st.last_frame_at or 0.0) >= patience
                or conn.silent_rotations == 0
            ):
                self.rotate(conn, f"all {len(keys)} streams silent", silent=True)

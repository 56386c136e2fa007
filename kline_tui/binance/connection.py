"""One combined-stream WebSocket connection to one market, kept alive while it carries streams.

A connection holds the set of streams it *should* carry and reconciles the server with it through
live SUBSCRIBE / UNSUBSCRIBE messages, paced under the market's control-message rate, so adding
or removing a stream never reopens the connection. When the socket fails it reconnects with capped
exponential backoff and full jitter, carrying its streams over.

The socket is aiohttp's WebSocket client: its frame reader is compiled, so a frame costs a
fraction of what it does with websockets' pure-Python one (`python -m benchmarks --only ingest`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from kline_tui.binance import wire
from kline_tui.binance.markets import MARKETS
from kline_tui.binance.rest import retry_after_s
from kline_tui.model import Market, StreamKey
from kline_tui.retry import Backoff, Spawn, plain_spawn
from kline_tui.safe_text import safe_text

__all__ = [
    "CLOSE_TIMEOUT_S",
    "Backoff",
    "ConnectBudget",
    "Connection",
    "ConnectionListener",
    "ConnectionState",
    "ConnectionStatus",
    "Spawn",
]

log = logging.getLogger(__name__)

# Initial streams ride in the URL, which servers refuse past about 8 KB: stay far below that.
_URL_BUDGET = 2000
# Streams per SUBSCRIBE message (undocumented limit: stay modest).
_PARAMS_PER_MESSAGE = 200
# How long to wait for the answer to a control message before treating the connection as broken.
_REPLY_TIMEOUT_S = 10.0
# How long a close may wait for the server's close frame before the socket is aborted.
CLOSE_TIMEOUT_S = 2.0


class ConnectionState(enum.StrEnum):
    CONNECTING = "connecting"
    LIVE = "live"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(slots=True)
class ConnectionStatus:
    """What a connection is doing, for status displays. Times are local monotonic seconds."""

    conn_id: int
    market: Market
    state: ConnectionState = ConnectionState.CONNECTING
    streams: int = 0
    connected_at: float | None = None
    attempt: int = 0
    next_attempt_at: float | None = None
    last_error: str | None = None
    reconnects: int = 0
    frames: int = 0
    malformed: int = 0
    # Receive time minus event time, of the latest event: the exchange's time (as its clock
    # is known here) when known, else the local clock's.
    lag_ms: float | None = None
    last_frame_at: float | None = None
    retiring: bool = False  # being replaced: carries on until its successor is live
    # (local monotonic time, frames so far), sampled twice a second: the rate over recent seconds
    recent_frames: collections.deque[tuple[float, int]] = field(
        default_factory=lambda: collections.deque(maxlen=64)
    )

    def frames_per_s(self, now: float | None = None) -> float:
        """Frames received per second over the last five seconds."""
        now = time.monotonic() if now is None else now
        window = [(t, n) for t, n in self.recent_frames if now - t <= 5.0]
        if not window:
            return 0.0
        t0, n0 = window[0]
        return float(self.frames - n0) / max(now - t0, 1.0)


class ConnectionListener(Protocol):
    """Where a connection sends what it receives (the Hub)."""

    def on_kline(
        self, key: StreamKey, event_time: int, kline: wire.WireKline, now: float | None = None
    ) -> None: ...  # `now`: time.monotonic() at receipt

    def on_subscribed(self, conn: Connection, keys: list[StreamKey]) -> None: ...

    def on_state(self, conn: Connection, message: str | None) -> None: ...

    def on_malformed(self, conn: Connection, reason: str) -> None: ...

    def on_implausible(self, conn: Connection, key: StreamKey, reason: str) -> None: ...

    def on_control_error(self, conn: Connection, keys: list[StreamKey], message: str) -> None: ...

    def on_shutdown_notice(self, conn: Connection) -> None: ...


class ConnectBudget:
    """Caps new connections per sliding window (Binance spot: 300 per 5 minutes per IP), so that
    even when every connection drops at once the reconnects stay within the exchange's budget."""

    def __init__(self, limit: int = 250, window_s: float = 300.0) -> None:
        self.limit, self.window_s = limit, window_s
        self._opened: collections.deque[float] = collections.deque()
        self.waited = 0  # times a connection had to wait for the budget

    async def acquire(self) -> None:
        while True:
            now = time.monotonic()
            while self._opened and now - self._opened[0] >= self.window_s:
                self._opened.popleft()
            if len(self._opened) < self.limit:
                self._opened.append(now)
                return
            self.waited += 1
            await asyncio.sleep(self._opened[0] + self.window_s - now + 0.01)


class _Pacer:
    """Holds control messages back so that no sliding window of `window` seconds carries more
    than `rate` of them."""

    def __init__(self, rate: int, window: float = 1.1) -> None:
        self.rate, self.window = rate, window
        self._sent: collections.deque[float] = collections.deque()

    async def wait(self) -> None:
        while True:
            now = time.monotonic()
            while self._sent and now - self._sent[0] >= self.window:
                self._sent.popleft()
            if len(self._sent) < self.rate:
                self._sent.append(now)
                return
            await asyncio.sleep(self._sent[0] + self.window - now + 0.005)


class Connection:
    """A combined-stream connection to one market that carries up to the market's stream limit."""

    _ids = itertools.count(1)

    def __init__(
        self,
        market: Market,
        ws_base: str,
        listener: ConnectionListener,
        *,
        backoff: Backoff | None = None,
        ping_interval_s: float | None = 20.0,
        open_timeout_s: float = 10.0,
        budget: ConnectBudget | None = None,
        clock: Callable[[Market], int | None] | None = None,
    ) -> None:
        self.market = market
        # The exchange's current time (ms) for a market, or None while unknown: an event far from
        # it is refused as impossible.
        self.clock = clock
        self.ws_base = ws_base.rstrip("/")
        self.listener = listener
        self.backoff = backoff or Backoff()
        self.ping_interval_s = ping_interval_s
        self.open_timeout_s = open_timeout_s
        self.budget = budget
        self.rotate_at_age = 23 * 3600.0  # seconds; the hub staggers it per connection
        self.silent_rotations = 0  # replacements in a row for silence (the hub backs off on them)
        self.status = ConnectionStatus(next(Connection._ids), market)
        spec = MARKETS[market]
        self.capacity = spec.streams_per_connection
        # Leave room in every second for one ping and one pong besides our control messages.
        self._pacer = _Pacer(max(1, spec.control_rate - 2))
        self._desired: dict[str, StreamKey] = {}  # stream name -> key: what we should carry
        self._subscribed: set[str] = set()  # what the server carries for us
        self._resubscribe: set[str] = set()  # streams to unsubscribe and subscribe again
        self._pending: dict[int, tuple[str, list[str]]] = {}  # request id -> (method, names)
        self._request_ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._closing = False
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self._kind_sampled_at = 0.0  # when a kind event last sampled the frame rate and lag

    # -- what the hub calls -------------------------------------------------------------------

    @property
    def keys(self) -> list[StreamKey]:
        return list(self._desired.values())

    @property
    def room(self) -> int:
        """Streams this connection can still take (none while it is being replaced)."""
        return 0 if self.status.retiring else self.capacity - len(self._desired)

    @property
    def fully_subscribed(self) -> bool:
        """Live, with every stream it should carry acknowledged by the server."""
        return (
            self._ws is not None
            and self.status.state is ConnectionState.LIVE
            and all(n in self._subscribed for n in self._desired)
        )

    def resubscribe(self, keys: Iterable[StreamKey]) -> None:
        """Unsubscribe and subscribe these streams again (a stream gone silent on a live socket)."""
        self._resubscribe.update(k.stream_name for k in keys if k.stream_name in self._subscribed)
        self._changed.set()

    def add(self, keys: Iterable[StreamKey]) -> None:
        """Carry these streams too; they are subscribed on the open socket, paced."""
        for key in keys:
            self._desired[key.stream_name] = key
        self.status.streams = len(self._desired)
        self._changed.set()

    def remove(self, keys: Iterable[StreamKey]) -> None:
        """Stop carrying these streams; they are unsubscribed on the open socket, paced."""
        for key in keys:
            self._desired.pop(key.stream_name, None)
        self.status.streams = len(self._desired)
        self._changed.set()

    @property
    def name(self) -> str:
        return f"{self.market.value} connection {self.status.conn_id}"

    def start(self, spawn: Spawn | None = None) -> asyncio.Task[None]:
        """Run the connection as a task; `spawn` (the supervisor's) restarts it if it fails."""
        self._task = (spawn or plain_spawn)(self.name, self.run)
        return self._task

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Close for good, within `timeout_s`: past it the socket is aborted, not closed politely.

        A polite close waits for the server's close frame while reading whatever it sends first,
        so a server that keeps sending (a ping flood, stray replies) would hold it forever.
        """
        self._closing = True
        self._changed.set()
        if self._ws is not None:
            await _close_within(self._ws, timeout_s)
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=timeout_s)
        self._set_state(ConnectionState.CLOSED, None)

    def request_reconnect(self, reason: str) -> None:
        """Drop the socket and reconnect (used on a serverShutdown notice or a dead socket)."""
        if self._ws is not None:
            log.info("connection %s: %s", self.status.conn_id, reason)
            self.status.last_error = reason
            task = asyncio.ensure_future(
                _close_within(self._ws, CLOSE_TIMEOUT_S, code=1000, message=reason[:100].encode())
            )
            _background.add(task)
            task.add_done_callback(_background.discard)

    # -- the life of the socket ---------------------------------------------------------------

    def _set_state(self, state: ConnectionState, message: str | None) -> None:
        self.status.state = state
        self.listener.on_state(self, message)

    def _url(self) -> tuple[str, list[str]]:
        names: list[str] = []
        length = len(self.ws_base) + len("/stream?streams=")
        for name in self._desired:
            if length + len(name) + 1 > _URL_BUDGET:
                break
            names.append(name)
            length += len(name) + 1
        return f"{self.ws_base}/stream?streams={'/'.join(names)}", names

    async def run(self) -> None:
        """Connect, serve and reconnect until closed (the connection's long-lived task)."""
        http = aiohttp.ClientSession()
        try:
            await self._run_with(http)
        finally:
            # Closing the session aborts any socket still open: this never waits on the server.
            await asyncio.shield(http.close())

    async def _run_with(self, http: aiohttp.ClientSession) -> None:
        attempt = 0
        while not self._closing:
            if self.budget is not None:
                await self.budget.acquire()
            url, initial = self._url()
            state = ConnectionState.CONNECTING if attempt == 0 else ConnectionState.RECONNECTING
            self.status.next_attempt_at = None
            self._set_state(state, None)
            reason = "closed"
            wait_s = 0.0  # the server's Retry-After, when it refused the handshake with one
            try:
                async with asyncio.timeout(self.open_timeout_s):
                    ws = await http.ws_connect(
                        url,
                        heartbeat=self.ping_interval_s,  # a ping every so often; no pong closes it
                        autoping=True,  # the server's pings are answered at once
                        compress=0,
                        # The socket itself refuses a frame above the decoder's limit, before
                        # buffering it (a bigger frame is garbage: the connection is dropped).
                        max_msg_size=wire.MAX_FRAME_BYTES,
                        timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
                    )
                try:
                    reason = await self._serve(ws, initial)
                finally:
                    await _close_within(ws, CLOSE_TIMEOUT_S)
            except _Lost as exc:
                reason = str(exc)
            except aiohttp.InvalidURL as exc:
                reason = f"bad WebSocket URL: {exc}"
            except aiohttp.WSServerHandshakeError as exc:
                reason = f"handshake refused: {exc.status} {exc.message}"
                if exc.status in (418, 429):
                    # Rate-limited or banned: wait as long as the server asks (capped), like REST.
                    asked = retry_after_s(exc.headers.get("Retry-After") if exc.headers else None)
                    wait_s = 60.0 if asked is None else asked
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                reason = f"cannot connect: {exc or type(exc).__name__}"
            finally:
                self._ws = None
                self._pending.clear()
                self._subscribed.clear()
            if self._closing or self.status.retiring:
                break
            # A connection that lived a while starts the backoff over.
            connected_at = self.status.connected_at
            if connected_at is not None and time.monotonic() - connected_at > 30.0:
                attempt = 0
            self.status.connected_at = None
            attempt += 1
            self.status.attempt = attempt
            self.status.reconnects += 1
            self.status.last_error = safe_text(reason, 200)  # it may quote the server
            delay = max(self.backoff.delay(attempt - 1), wait_s)
            self.status.next_attempt_at = time.monotonic() + delay
            self._set_state(
                ConnectionState.RECONNECTING, f"{self.status.last_error}; retrying in {delay:.1f} s"
            )
            await asyncio.sleep(delay)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse, initial: list[str]) -> str:
        self._ws = ws
        self._subscribed = set(initial)
        self.status.connected_at = time.monotonic()
        self.status.attempt = 0
        self._set_state(ConnectionState.LIVE, f"connected, {len(initial)} streams in the URL")
        self.listener.on_subscribed(self, [self._desired[n] for n in initial if n in self._desired])
        control = asyncio.create_task(self._control(ws))
        try:
            return await self._read(ws, control)
        finally:
            control.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, ConnectionError):
                await control

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, control: asyncio.Task[None]) -> str:
        listener, status = self.listener, self.status
        decode, envelope_t, kline_t = wire.decode, wire.Envelope, wire.KlineEvent
        shutdown_t = wire.ShutdownEvent
        implausible, clock, market = wire.implausible, self.clock, self.market
        desired = self._desired
        recent = status.recent_frames
        receive, monotonic = ws.receive, time.monotonic
        # The exchange's time is read afresh every 0.1 s, not per frame (even a simulator at
        # 600x moves only a minute meanwhile, against a five-minute tolerance).
        exchange_now, clock_read_at = (clock(market) if clock else None), monotonic()
        last_mark = 0.0
        while True:
            message = await receive()
            kind = message.type
            if kind is not _TEXT and kind is not _BINARY:  # binary frames become Malformed below
                return _describe_close(message, ws)
            frame = message.data
            now = monotonic()
            status.frames += 1
            status.last_frame_at = now
            msg = decode(frame)
            if type(msg) is envelope_t:
                data = msg.data
                if type(data) is kline_t:
                    key = desired.get(msg.stream)
                    k = data.k
                    if key is None:
                        continue  # a stream we just unsubscribed: its last frames still arrive
                    if (
                        k.interval != key.interval or k.symbol != key.symbol
                    ):  # a StrEnum equals its value
                        status.malformed += 1
                        listener.on_malformed(
                            self, f"event on {msg.stream} names {k.symbol} {k.interval}"
                        )
                        continue
                    # An impossible candle is never stored nor used to infer missing ones: one
                    # from the far future would otherwise set off a fetch of millions of them.
                    if clock is not None and now - clock_read_at >= 0.1:
                        exchange_now, clock_read_at = clock(market), now
                    why = implausible(k, data.E, key.interval, exchange_now)
                    if why is not None:
                        status.malformed += 1
                        listener.on_implausible(self, key, why)
                        continue
                    listener.on_kline(key, data.E, k, now)
                    if now - last_mark >= 0.5:
                        last_mark = now
                        recent.append((now, status.frames))
                        # Against the exchange's clock where known, so a local clock that is off
                        # (or a simulator's fast one) does not pass for lag.
                        at = clock(market) if clock is not None else None
                        status.lag_ms = (time.time() * 1000 if at is None else at) - data.E
                elif type(data) is shutdown_t:
                    # serverShutdown: the server will close this connection soon. Keep reading
                    # while the hub opens a replacement (make before break).
                    listener.on_shutdown_notice(self)
                elif isinstance(data, wire.KindEvent):
                    self._on_kind_event(msg.stream, data, now)
            elif type(msg) is wire.ControlReply:
                self._on_reply(msg)
            elif type(msg) is wire.Malformed:
                status.malformed += 1
                listener.on_malformed(self, msg.reason)
            if control.done() and not control.cancelled():
                failure = control.exception()
                if failure is not None:
                    raise failure

    def _on_kind_event(self, stream: str, data: wire.KindEvent, now: float) -> None:
        """A continuous, mark or index kline event: checked against the stream it came on (its
        pair or symbol, kind and interval), then handed on like a trade kline."""
        key = self._desired.get(stream)
        if key is None:
            return  # a stream we just unsubscribed
        k, symbol, kind = data.series()
        if k.interval != key.interval or symbol != key.symbol or kind is not key.kind:
            self.status.malformed += 1
            self.listener.on_malformed(
                self, f"event on {safe_text(stream, 60)} names {symbol} {kind} {k.interval}"
            )
            return
        clock = self.clock
        why = wire.implausible(k, data.E, key.interval, clock(self.market) if clock else None)
        if why is not None:
            self.status.malformed += 1
            self.listener.on_implausible(self, key, why)
            return
        self.listener.on_kline(key, data.E, k, now)
        status = self.status
        if now - self._kind_sampled_at >= 0.5:  # as the trade klines' loop samples its rate
            self._kind_sampled_at = now
            status.recent_frames.append((now, status.frames))
            at = clock(self.market) if clock is not None else None
            status.lag_ms = (time.time() * 1000 if at is None else at) - data.E

    def _on_reply(self, reply: wire.ControlReply) -> None:
        if reply.id is None or reply.id not in self._pending:
            return
        method, names = self._pending.pop(reply.id)
        self._changed.set()  # names in flight are settled: the control loop may act on them again
        if not reply.ok:
            keys = [self._desired[n] for n in names if n in self._desired]
            self.listener.on_control_error(
                self, keys, f"{method} refused: code {reply.error_code} {reply.error_msg}"
            )
            if method == "SUBSCRIBE":
                # Don't retry a request the server refuses; drop the streams from this connection.
                self.remove(keys)
            return
        if method == "SUBSCRIBE":
            self._subscribed.update(names)
            keys = [self._desired[n] for n in names if n in self._desired]
            self.listener.on_subscribed(self, keys)

    async def _control(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Reconcile the server's subscriptions with the desired set, paced under the rate limit."""
        while True:
            in_flight = {n for _, names in self._pending.values() for n in names}
            drop = [
                n
                for n in self._subscribed
                if (n not in self._desired or n in self._resubscribe) and n not in in_flight
            ]
            self._resubscribe.difference_update(drop)
            add = [n for n in self._desired if n not in self._subscribed and n not in in_flight]
            if not drop and not add:
                self._changed.clear()
                await self._changed.wait()
                continue
            for method, names in (("UNSUBSCRIBE", drop), ("SUBSCRIBE", add)):
                for i in range(0, len(names), _PARAMS_PER_MESSAGE):
                    chunk = names[i : i + _PARAMS_PER_MESSAGE]
                    await self._pacer.wait()
                    request_id = next(self._request_ids)
                    self._pending[request_id] = (method, chunk)
                    if method == "UNSUBSCRIBE":
                        # Frames of a dropped stream are ignored from now on, answered or not.
                        self._subscribed.difference_update(chunk)
                    try:
                        await ws.send_str(wire.encode_control(method, request_id, chunk).decode())
                    except ConnectionError as exc:  # aiohttp: writing to a closing socket
                        raise _Lost(f"connection lost ({exc})") from None
                    asyncio.get_running_loop().call_later(
                        _REPLY_TIMEOUT_S, self._check_answered, ws, request_id
                    )

    def _check_answered(self, ws: aiohttp.ClientWebSocketResponse, request_id: int) -> None:
        if request_id in self._pending and self._ws is ws:
            self.request_reconnect(f"no answer to control request {request_id}")


_TEXT, _BINARY = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY

# Closes started by `request_reconnect`, kept referenced until done.
_background: set[asyncio.Future[None]] = set()


async def _close_within(
    ws: aiohttp.ClientWebSocketResponse, timeout_s: float, *, code: int = 1000, message: bytes = b""
) -> None:
    """Close politely if the server lets us within `timeout_s`, else abort the socket.

    aiohttp aborts the underlying connection when its close is cancelled, so the timeout is
    all it takes; errors of a socket that is going away anyway are of no interest.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await ws.close(code=code, message=message)
    except (TimeoutError, aiohttp.ClientError, OSError, RuntimeError):
        pass


class _Lost(ConnectionError):
    """The socket failed mid-session; the message says how."""


def _describe_close(message: aiohttp.WSMessage, ws: aiohttp.ClientWebSocketResponse) -> str:
    if message.type is aiohttp.WSMsgType.CLOSE:
        return f"closed by server: {message.data} {message.extra or ''}".rstrip()
    if message.type is aiohttp.WSMsgType.ERROR:
        return f"connection lost ({message.data or type(message.data).__name__})"
    if ws.close_code is not None and ws.close_code != 1006:
        return f"closed by server: {ws.close_code}"
    return "connection lost (no close frame)"

"""The WebSocket side of one simulated market: paths, control messages, limits, pings, pushes.

One `Connection` per accepted handshake. Its handler task reads and answers control messages;
one pump task per connection (not per stream) pushes every subscribed stream on its period,
sends pings and enforces the connection lifetime.

Streams of every kind Binance documents: `<symbol>@kline_<i>` everywhere, futures'
`<pair>_<contracttype>@continuousKline_<i>` (USD-M under `/market`, like its trade klines) and
COIN-M's `<symbol>@markPriceKline_<i>` and `<pair>@indexPriceKline_<i>`. Any other name (USD-M
mark or index klines, premium klines anywhere, spot's non-trade kinds, unknown symbols) is
acknowledged and then stays silent, as Binance does. A flood task runs only while the hostile
server's ping flood or stray replies are switched on (see `faults`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
from aiohttp import WSMsgType, web

from kline_tui.binance.markets import MARKETS
from kline_tui.model import Interval, Kind, Market
from kline_tui.sim.candles import WireCandle, final_for, forming_for, kind_source, series_event
from kline_tui.sim.clock import SimClock
from kline_tui.sim.faults import Faults, MarketFaults
from kline_tui.sim.poison import poison_event
from kline_tui.sim.stats import ConnStats, MarketStats
from kline_tui.sim.universe import SymbolInfo

__all__ = ["Connection", "MarketWs"]

_STREAM_RE = re.compile(
    r"([a-z0-9_]+)@(kline|continuousKline|markPriceKline|indexPriceKline)_([0-9]+[smhdwM])"
)
_CONTRACT_SUFFIXES = tuple((f"_{kind.value}", kind) for kind in Kind if kind.is_continuous)
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
# With a very fast clock a stream can fall this many candles behind between two pushes; beyond
# it the oldest closes are skipped rather than flooding the socket.
_MAX_CLOSES_PER_PUSH = 10_000
_HOUSEKEEPING_S = 0.25  # how often a pump wakes at least: fault deadlines, lifetime, pongs
_CLOSE_TIMEOUT_S = 2.0  # how long a clean close waits for the client's close frame
_OVERSIZED = 1 << 20
_FLOOD_BURST = 16  # frames a flood at full speed sends between two yields to the event loop
_FLOOD_TICK_S = 0.005  # how often a paced flood wakes
_HANDSHAKE_POLL_S = 0.05  # how often a held handshake looks at its switch and its socket
_DECOY_SYMBOLS = ("BTCUSDT", "ETHUSDT", "BTCUSD_PERP", "ETHUSD_PERP")

log = logging.getLogger(__name__)
_encode = msgspec.json.encode
_decode = msgspec.json.decode
_conn_ids = itertools.count(1)


@dataclass(eq=False, slots=True)
class _Sub:
    """One subscribed stream on one connection. `interval` None: acknowledged but silent."""

    name: str
    symbol: str | None  # what the kind is keyed by: the pair for index and continuous klines
    interval: Interval | None
    period_s: float | None
    last_open: int | None = None  # open time of the candle in the last push
    kind: Kind = Kind.TRADE


class _RequestError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


class MarketWs:
    """Serves the WebSocket paths of one market and keeps its connections."""

    def __init__(
        self,
        market: Market,
        clock: SimClock,
        faults: Faults,
        stats: MarketStats,
        symbols: dict[str, SymbolInfo],
        ping_interval_s: float,
        rng: random.Random,
    ) -> None:
        self.market = market
        self.spec = MARKETS[market]
        self.clock = clock
        self.faults = faults
        self.stats = stats
        self.symbols = symbols
        self.ping_interval_s = ping_interval_s
        self.rng = rng
        self.live: set[Connection] = set()

    def add_routes(self, app: web.Application) -> None:
        """Register the market's WebSocket paths on `app`."""
        if self.market is Market.USDM:
            # USD-M serves klines only under /market; the old unrouted paths still accept and
            # acknowledge, then never push a kline (the 2026 routing change).
            self._add_paths(app, "/market", silent=False)
            self._add_paths(app, "", silent=True)
        else:
            self._add_paths(app, "", silent=False)

    def _add_paths(self, app: web.Application, prefix: str, silent: bool) -> None:
        def route(combined: bool):
            async def handler(request: web.Request) -> web.StreamResponse:
                return await self._handle(request, combined=combined, silent=silent)

            return handler

        app.router.add_get(f"{prefix}/ws", route(False))
        app.router.add_get(prefix + "/ws/{streams:.+}", route(False))
        app.router.add_get(f"{prefix}/stream", route(True))

    def resolve(self, name: str) -> tuple[str, Interval, Kind] | None:
        """The (key, interval, kind) a stream name pushes, or None if it stays silent. The key is
        the symbol, or the pair for index and continuous klines."""
        m = _STREAM_RE.fullmatch(name)
        if not m:
            return None
        head, channel, interval_text = m.groups()
        try:
            interval = Interval(interval_text)
        except ValueError:
            return None
        kind = Kind.TRADE
        if channel == "continuousKline":
            for suffix, contract in _CONTRACT_SUFFIXES:
                if head.endswith(suffix):
                    head, kind = head[: -len(suffix)], contract
                    break
            else:
                return None
        elif channel != "kline":
            kind = Kind.MARK if channel == "markPriceKline" else Kind.INDEX
        key = head.upper()
        source = kind_source(self.market, key, kind)
        if (
            source is None
            or not kind.has_stream(self.market)
            or source.symbol not in self.symbols
            or not source.trading
            or interval not in self.market.intervals
        ):
            return None
        return key, interval, kind

    def push_period_s(self, interval: Interval) -> float:
        """Real seconds between two pushes of a stream of this interval."""
        if interval is Interval.S1:
            return 1.0
        return self.market.push_period_ms / 1000

    def decoy_symbol(self, symbol: str, kind: Kind = Kind.TRADE) -> str:
        """Another key of this market's `kind` of series, one a client may also record (for
        poisoned events): a symbol, or a pair for index and continuous klines."""
        keys = list(self.symbols)
        if kind.keyed_by_pair:
            keys = list(dict.fromkeys(info.pair for info in self.symbols.values()))
        for decoy in _DECOY_SYMBOLS:
            info = self.symbols.get(decoy)
            key = decoy if info is None or not kind.keyed_by_pair else info.pair
            if key != symbol and key in keys:
                return key
        return next(k for k in keys if k != symbol)

    def _refusal(self, faults: MarketFaults) -> web.Response:
        """The answer to a refused handshake: 503, or a rate limit with Retry-After."""
        self.stats.handshakes_refused += 1
        status = faults.refuse_status
        headers = {}
        if status in (418, 429) or faults.refuse_retry_after is not None:
            headers["Retry-After"] = str(
                1 if faults.refuse_retry_after is None else faults.refuse_retry_after
            )
        if status in (418, 429):
            msg = "Too many requests; the IP is rate limited." if status == 429 else "IP banned."
            return web.json_response(
                {"code": -1003, "msg": faults.with_hostile_text(msg)},
                status=status,
                headers=headers,
            )
        return web.Response(
            status=status, text=faults.with_hostile_text("Service Unavailable"), headers=headers
        )

    async def _hold_handshake(self, request: web.Request, faults: MarketFaults) -> bool:
        """Slow-loris: wait `handshake_delay_s` (re-read, so lowering it releases the wait) before
        answering. False if the client gave up meanwhile."""
        self.stats.handshakes_delayed += 1
        arrived = time.monotonic()
        while (left := arrived + faults.handshake_delay_s - time.monotonic()) > 0:
            transport = request.transport
            if transport is None or transport.is_closing():
                return False
            await asyncio.sleep(min(left, _HANDSHAKE_POLL_S))
        return True

    async def _handle(
        self, request: web.Request, combined: bool, silent: bool
    ) -> web.StreamResponse:
        faults = self.faults[self.market]
        if faults.handshake_delay_s > 0 and not await self._hold_handshake(request, faults):
            return web.Response(status=408)  # nobody is left to read it
        if faults.refusing(time.monotonic()):
            return self._refusal(faults)
        listed = request.match_info.get("streams") or request.query.get("streams", "")
        names = [n for n in listed.split("/") if n]
        if len(names) > self.spec.streams_per_connection:
            return web.json_response(
                {
                    "code": 2,
                    "msg": f"Invalid request: at most {self.spec.streams_per_connection} streams",
                },
                status=400,
            )
        ws = web.WebSocketResponse(
            autoping=False,  # pings and pongs count against the message rate: see them all
            autoclose=False,  # the hostile server may leave a client's close frame unanswered
            compress=False,  # Binance does not negotiate permessage-deflate
            timeout=_CLOSE_TIMEOUT_S,
            max_msg_size=_OVERSIZED,
        )
        await ws.prepare(request)
        record = ConnStats(
            id=next(_conn_ids), market=self.market, path=request.path_qs, combined=combined
        )
        self.stats.connections_opened += 1
        self.stats.connections.append(record)
        conn = Connection(self, ws, request, record, silent)
        self.live.add(conn)
        try:
            await conn.run(names)
        finally:
            self.live.discard(conn)
        return ws

    async def close_all(self, code: int = 1001, reason: str = "server stopping") -> None:
        """Close every connection cleanly, aborting those that do not answer in time."""
        conns = list(self.live)
        if not conns:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(c.close(code, reason) for c in conns), return_exceptions=True),
                _CLOSE_TIMEOUT_S + 0.5,
            )
        for conn in conns:
            conn.abort(reason)


class Connection:
    """One accepted WebSocket connection of one market."""

    def __init__(
        self,
        hub: MarketWs,
        ws: web.WebSocketResponse,
        request: web.Request,
        record: ConnStats,
        silent: bool,
    ) -> None:
        self.hub = hub
        self.ws = ws
        self.request = request
        self.record = record
        self.silent = silent
        self.subs: dict[str, _Sub] = {}
        self._fresh: dict[str, _Sub] = {}  # subscribed, waiting for their first push
        self._due: dict[float, float] = {}  # push period -> next push (monotonic)
        self._wake = asyncio.Event()
        now = time.monotonic()
        self._next_ping = now + hub.ping_interval_s
        self._ping_outstanding: float | None = None
        self._closing = False
        self._flood: asyncio.Task | None = None
        self.faults = hub.faults[hub.market]

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, names: Iterable[str]) -> None:
        """Serve the connection until it closes."""
        for name in names:
            self._add(name)
        pump = asyncio.create_task(self._pump(), name=f"sim-pump-{self.record.id}")
        self._start_flood()
        try:
            await self._read_loop()
        finally:
            pump.cancel()
            if self._flood is not None:
                self._flood.cancel()
            await asyncio.gather(
                pump, *([self._flood] if self._flood else []), return_exceptions=True
            )
            self.record.closed_at = time.monotonic()
            self.record.subscriptions = set(self.subs)
            if self.record.close_reason is None:
                self.record.close_reason = f"closed {self.ws.close_code}"

    async def close(self, code: int, reason: str) -> None:
        """Close cleanly with a close frame."""
        if self._closing or self.ws.closed:
            return
        self._closing = True
        self.record.close_reason = reason
        await self.ws.close(code=code, message=self.faults.close_reason(reason))

    def abort(self, reason: str = "aborted") -> None:
        """Cut the TCP connection without a close frame."""
        if self.record.closed_at is not None:
            return
        if self.record.close_reason is None:
            self.record.close_reason = reason
        self._closing = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def send_raw(self, frame: str | bytes) -> None:
        """Send one exact frame: text for str, binary for bytes."""
        if isinstance(frame, str):
            await self.ws.send_str(frame)
        else:
            await self.ws.send_bytes(frame)
        self._count_sent()

    async def send_server_shutdown(self) -> None:
        """Send Binance's `serverShutdown` notice."""
        event = {"e": "serverShutdown", "E": self.hub.clock.now_ms()}
        if self.record.combined:
            event = {"stream": "!serverShutdown", "data": event}
        await self._send(_encode(event))

    async def _send(self, payload: bytes) -> None:
        await self.ws.send_frame(payload, WSMsgType.TEXT)
        self._count_sent()

    def _count_sent(self) -> None:
        record = self.record
        record.frames_sent += 1
        if record.client_closed_at is not None:
            record.frames_after_client_close += 1

    # -- reading ---------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        ws, record = self.ws, self.record
        rate = self.hub.spec.control_rate
        while True:
            msg = await ws.receive()
            kind = msg.type
            if kind is WSMsgType.CLOSE:
                await self._client_closed()
                return
            if kind in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                if record.close_reason is None:
                    record.close_reason = "lost"
                return
            if kind is WSMsgType.PONG and self.faults.ping_flood_per_s:
                # A flooding server does not police the answers to its own flood.
                record.pongs_received += 1
                continue
            if record.count_incoming(time.monotonic()) > rate:
                record.rate_violations += 1
                self.hub.stats.rate_violations += 1
                await self.close(1008, "Too many requests")
                return
            if kind is WSMsgType.PING:
                await ws.pong(msg.data)
            elif kind is WSMsgType.PONG:
                record.pongs_received += 1
                self._ping_outstanding = None
            elif kind is WSMsgType.TEXT:
                await self._send(_encode(self._answer(msg.data)))
            # Binary frames are not requests; they only count against the rate.

    async def _client_closed(self) -> None:
        """The client sent a close frame: answer it, unless a flood is on (then keep flooding
        until the client hangs up or the flood is switched off)."""
        record = self.record
        record.client_closed_at = time.monotonic()
        if record.close_reason is None:
            record.close_reason = f"client closed {self.ws.close_code}"
        while (
            self.faults.flooding
            and not self._closing
            and self._flood is not None
            and not self._flood.done()
        ):
            await asyncio.sleep(_HOUSEKEEPING_S / 5)
        self._closing = True
        await self.ws.close(drain=False)

    def _answer(self, text: str) -> dict:
        """The reply to one control message."""
        try:
            request = _decode(text)
        except msgspec.DecodeError as exc:
            return self._error(3, f"Invalid JSON: {exc}", None)
        if not isinstance(request, dict):
            return self._error(2, "Invalid request: expected a JSON object", None)
        method, params = request.get("method"), request.get("params")
        self.record.control.append(
            (
                time.monotonic(),
                str(method),
                params if isinstance(params, list) else [] if params is None else [params],
            )
        )
        if method == "SUBSCRIBE":
            self.hub.stats.subscribe_messages += 1
        elif method == "UNSUBSCRIBE":
            self.hub.stats.unsubscribe_messages += 1
        if "id" not in request:
            return self._error(2, "Invalid request: missing field `id`", None)
        req_id = request["id"]
        if not _valid_id(req_id):
            return self._error(2, "Invalid request: request ID must be an unsigned integer", None)
        try:
            return {"result": self._execute(method, params), "id": req_id}
        except _RequestError as err:
            return self._error(err.code, err.msg, req_id)

    def _error(self, code: int, msg: str, req_id: object) -> dict:
        return {"code": code, "msg": self.faults.with_hostile_text(msg), "id": req_id}

    def _execute(self, method: object, params: object) -> object:
        if method is None:
            raise _RequestError(2, "Invalid request: missing field `method`")
        if method not in _METHODS:
            expected = ", ".join(f"`{m}`" for m in _METHODS)
            raise _RequestError(
                2, f"Invalid request: unknown variant `{method}`, expected one of {expected}"
            )
        if method == "LIST_SUBSCRIPTIONS":
            return list(self.subs)
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                raise _RequestError(2, "Invalid request: params must be a list of stream names")
            if method == "UNSUBSCRIBE":
                for name in params:
                    self._remove(name)
                return None
            limit = self.hub.spec.streams_per_connection
            if len(set(self.subs) | set(params)) > limit:
                raise _RequestError(
                    2, f"Invalid request: too many streams, at most {limit} per connection"
                )
            for name in params:
                self._add(name)
            return None
        # SET_PROPERTY / GET_PROPERTY
        want = 2 if method == "SET_PROPERTY" else 1
        if not isinstance(params, list) or len(params) != want:
            raise _RequestError(2, f"Invalid request: {method} takes {want} parameter(s)")
        if not isinstance(params[0], str):
            raise _RequestError(2, "Invalid request: property name must be a string")
        if params[0] != "combined":
            raise _RequestError(0, "Unknown property")
        if method == "GET_PROPERTY":
            return self.record.combined
        if not isinstance(params[1], bool):
            raise _RequestError(1, "Invalid value type: expected Boolean")
        self.record.combined = params[1]
        return None

    def _add(self, name: str) -> None:
        if name in self.subs:
            return
        target = None if self.silent else self.hub.resolve(name)
        if target is None:
            sub = _Sub(name, None, None, None)
        else:
            symbol, interval, kind = target
            sub = _Sub(name, symbol, interval, self.hub.push_period_s(interval), kind=kind)
            self._fresh[name] = sub
            self._wake.set()
        self.subs[name] = sub
        self.record.subscriptions.add(name)

    def _remove(self, name: str) -> None:
        self.subs.pop(name, None)
        self._fresh.pop(name, None)
        self.record.subscriptions.discard(name)

    # -- pushing ---------------------------------------------------------------------------

    async def _pump(self) -> None:
        try:
            while not self._closing:
                self._wake.clear()
                now = time.monotonic()
                if not await self._housekeeping(now):
                    return
                if self._fresh:
                    fresh, self._fresh = list(self._fresh.values()), {}
                    for sub in fresh:
                        # Only a stream with candles to push waits in _fresh: it has a period.
                        assert sub.period_s is not None
                        self._due.setdefault(sub.period_s, now + sub.period_s)
                        await self._push(sub)
                for period, due in list(self._due.items()):
                    if due > now:
                        continue
                    # Keep the cadence, but never burst to catch up after a slow round.
                    self._due[period] = due + period if due + period > now else now + period
                    for sub in [s for s in self.subs.values() if s.period_s == period]:
                        if sub.last_open is not None and self.subs.get(sub.name) is sub:
                            await self._push(sub)
                wake_at = min([self._next_ping, now + _HOUSEKEEPING_S, *self._due.values()])
                delay = wake_at - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
        except ConnectionError:
            # The peer went away mid-send; the read loop notices and records why.
            return
        except Exception:
            # A bug here must not pass silently as a quiet stream: log it and hang up.
            log.exception("simulator push loop failed on connection %s", self.record.id)
            await self.close(1011, "internal error")

    async def _housekeeping(self, now: float) -> bool:
        """Pings, pong timeout and lifetime; False once the connection is being closed."""
        interval = self.hub.ping_interval_s
        if self._ping_outstanding is not None and now - self._ping_outstanding > 3 * interval:
            await self.close(1008, "pong timeout")
            return False
        lifetime = self.hub.faults[self.hub.market].lifetime_s
        if lifetime is not None and now - self.record.opened_at >= lifetime:
            await self.close(1000, "lifetime reached")
            return False
        if self.faults.flooding:
            self._start_flood()
        if now >= self._next_ping:
            self._next_ping = now + interval
            if self._ping_outstanding is None:
                self._ping_outstanding = now
            await self.ws.ping(b"")
            self.record.pings_sent += 1
        return True

    async def _push(self, sub: _Sub) -> None:
        """Push one stream: the closes since its last push, then its forming candle."""
        hub, record, stats = self.hub, self.record, self.hub.stats
        faults = hub.faults[hub.market]
        market, symbol, interval = hub.market, sub.symbol, sub.interval
        assert symbol is not None and interval is not None
        now_ms = hub.clock.now_ms()
        current = interval.open_time_at(now_ms)
        closes: list[WireCandle] = []
        late: list[WireCandle] = []
        if sub.last_open is not None and sub.last_open < current:
            t = sub.last_open
            if interval.ms and (current - t) // interval.ms > _MAX_CLOSES_PER_PUSH:
                t = current - _MAX_CLOSES_PER_PUSH * interval.ms
            rng = hub.rng
            while t < current:
                candle = final_for(market, symbol, interval, t, sub.kind)
                roll = rng.random()
                if roll < faults.drop_close_rate:
                    pass
                elif roll < faults.drop_close_rate + faults.late_close_rate:
                    late.append(candle)
                else:
                    closes.append(candle)
                    if rng.random() < faults.duplicate_close_rate:
                        closes.append(candle)
                t = interval.next_open(t)
        sub.last_open = current
        if faults.stalled(sub.name, time.monotonic()):
            return  # held back, and lost: the stream resumes with the candle forming then
        forming = forming_for(market, symbol, interval, current, now_ms, sub.kind)
        events = [(c, True) for c in closes] + [(forming, False)] + [(c, True) for c in late]
        iv = interval.value
        poison = (
            faults.poison if faults.poison is not None and faults.poison.applies(sub.name) else None
        )
        sized = (
            faults.sized if faults.sized is not None and faults.sized.applies(sub.name) else None
        )
        for candle, closed in events:
            event = series_event(market, sub.kind, symbol, iv, candle, closed, now_ms)
            if record.combined:
                event = {"stream": sub.name, "data": event}
            if poison is not None:
                await self._send_poison(sub, now_ms, poison.count(hub.rng.random()))
                if poison.replace:
                    continue  # the real frame is withheld, as if lost
            await self._send(_encode(event))
            record.kline_events_sent += 1
            stats.kline_events_sent += 1
            if closed:
                record.closed_events_sent += 1
                stats.closed_events_sent += 1
            if faults.malformed_rate and hub.rng.random() < faults.malformed_rate:
                await self._send_malformed(event)
            if sized is not None and hub.rng.random() < sized.rate:
                await self._send_sized(event, sized.limit_bytes)

    async def _send_poison(self, sub: _Sub, now_ms: int, count: int) -> None:
        """Send `count` poisoned events on `sub`'s stream, in the poison's turn of shapes."""
        hub = self.hub
        poison = self.faults.poison
        assert sub.symbol is not None and sub.interval is not None
        if poison is None:
            return
        for _ in range(count):
            event = poison_event(
                poison.next_kind(),
                hub.market,
                sub.symbol,
                sub.interval,
                now_ms,
                hub.rng,
                hub.decoy_symbol(sub.symbol, sub.kind),
                sub.kind,
            )
            if self.record.combined:
                event = {"stream": sub.name, "data": event}
            await self._send(_encode(event))
            self.record.poison_frames_sent += 1
            hub.stats.poison_frames_sent += 1

    async def _send_sized(self, event: dict, limit: int) -> None:
        """Two copies of `event` with a `pad` field: `limit - 1` and `limit + 1` bytes long."""
        wrapped = "data" in event
        inner = event["data"] if wrapped else event

        def framed(pad: str) -> bytes:
            body = {**inner, "pad": pad}
            return _encode({**event, "data": body} if wrapped else body)

        bare = len(framed(""))
        for size in (limit - 1, limit + 1):
            await self._send(framed("x" * (size - bare)))
            self.hub.stats.sized_frames_sent += 1

    # -- the hostile server's flood --------------------------------------------------------------

    def _start_flood(self) -> None:
        if self.faults.flooding and (self._flood is None or self._flood.done()):
            self._flood = asyncio.create_task(self._run_flood(), name=f"sim-flood-{self.record.id}")

    async def _run_flood(self) -> None:
        """Pings and stray replies at the switches' rates until both are off or the peer is gone."""
        faults, ws, record = self.faults, self.ws, self.record
        stats, rng = self.hub.stats, self.hub.rng
        pings, strays = _Pacer(), _Pacer()
        try:
            while faults.flooding and not self._closing:
                now = time.monotonic()
                for _ in range(pings.due(faults.ping_flood_per_s, now)):
                    await ws.ping(b"flood")
                    self._count_sent()
                    record.flood_pings_sent += 1
                    stats.flood_pings_sent += 1
                for _ in range(strays.due(faults.stray_replies_per_s, now)):
                    await self._send(_encode({"result": None, "id": rng.getrandbits(63)}))
                    record.stray_replies_sent += 1
                    stats.stray_replies_sent += 1
                full_speed = math.inf in (faults.ping_flood_per_s, faults.stray_replies_per_s)
                await asyncio.sleep(0 if full_speed else _FLOOD_TICK_S)
        except (ConnectionError, RuntimeError):
            return  # the peer hung up, or aiohttp refuses to write on a closed socket

    async def _send_malformed(self, event: dict) -> None:
        kind, payload = _malformed(event, self.hub.rng)
        if kind == "binary":
            await self.ws.send_bytes(payload)
            self._count_sent()
        else:
            await self._send(payload)
        self.hub.stats.malformed_frames_sent += 1


class _Pacer:
    """Turns a rate (frames per second) into a number of frames due at each wake-up."""

    __slots__ = ("_credit", "_last")

    def __init__(self) -> None:
        self._last = time.monotonic()
        self._credit = 0.0

    def due(self, per_s: float, now: float) -> int:
        """Frames to send now for `per_s` (math.inf: a burst; 0: none)."""
        elapsed, self._last = now - self._last, now
        if per_s <= 0:
            self._credit = 0.0
            return 0
        if math.isinf(per_s):
            return _FLOOD_BURST
        # At most a tenth of a second of credit: a slow loop turn does not become a burst.
        self._credit = min(self._credit + per_s * elapsed, max(1.0, per_s / 10))
        whole = int(self._credit)
        self._credit -= whole
        return whole


def _valid_id(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 <= value < 1 << 64
    return isinstance(value, str) and 0 < len(value) <= 36


def _malformed(event: dict, rng: random.Random) -> tuple[str, bytes]:
    """A broken variant of `event`: (kind, payload). Kinds: not-json, wrong-type, missing,
    binary. (A frame over the client's size limit ends its connection, so it is a switch of its
    own rather than one of these.)"""
    kind = rng.choice(("not-json", "wrong-type", "missing", "binary"))
    combined = "data" in event
    inner = event["data"] if combined else event

    def wrap(body: dict) -> dict:
        return {"stream": event["stream"], "data": body} if combined else body

    if kind == "not-json":
        return kind, rng.choice((b'{"e":"kline","E":', b"not json at all", b'{"e":"kline",}'))
    if kind == "wrong-type":
        k = dict(inner["k"])
        if rng.random() < 0.5:
            k["t"] = "abc"
            broken = {**inner, "k": k}
        else:
            broken = {**inner, "k": []}
        return kind, _encode(wrap(broken))
    if kind == "missing":
        k = {key: v for key, v in inner["k"].items() if key not in ("c", "T")}
        return kind, _encode(wrap({**inner, "k": k}))
    return kind, _encode(event)  # binary

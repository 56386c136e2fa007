"""The client an attached UI reads a recorder through: a local mirror kept by the events socket.

    client = RemoteRecorder("http://127.0.0.1:8765", token, events)
    task = asyncio.create_task(client.run())     # connects, and reconnects until close()
    await client.wait_connected()
    client.streams[key].forming                  # the hub's own types, updated in place
    await client.add([key]); await client.flush()
    await client.close()

The mirror holds the core's own types, so the UI's widgets read it as they read a pipeline in
their own process: `streams` is a dict of `StreamState` (forming candle a `WireKline`, closed
candles a deque of `Candle`), `connections` a list of `ConnectionStatus`, `sink` a `SinkStats`.
The dict, the list, the sink and each stream's state are updated in place and keep their identity
for the client's life; a snapshot (at every connect) replaces their contents, so streams removed
while the client was away disappear. Ages the server sends become local monotonic times again
(`received_at`, `connected_at`, `next_attempt_at`), measured from when the message arrived.

While the recorder cannot be reached, `connected` is False, `last_error` says why and
`next_attempt_at` (monotonic) when the next try is; the streams stay, each marked
`StreamStatus.RECONNECTING` (its candles, counters and `received_at` kept, so their age keeps
growing), and `connections` is empty: what the recorder's sockets do is unknown until it answers.
Reconnects back off with full jitter (`retry.Backoff`) and never give up.

Nothing the server sends is trusted: a message is at most `max_msg_size` bytes and every list and
string in it is bounded (`kline_tui.service.protocol`), specs are parsed as `StreamKey`s, candles
that cannot be real are dropped, the mirror holds at most MAX_STREAMS streams, and text goes
through `safe_text` (the event log's does it for events). A message that breaks a rule ends the
connection, which is then retried like a lost one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import msgspec

from kline_tui.alerts.rules import Firing
from kline_tui.binance.connection import ConnectionStatus
from kline_tui.binance.wire import WireKline, kind_is_sane
from kline_tui.config import AlertConfig
from kline_tui.model import Candle, Kind, Market, SpecError, StreamKey, validate_symbol
from kline_tui.recorder.events import EventLog
from kline_tui.recorder.hub import StreamState, StreamStatus
from kline_tui.recorder.pipeline import StreamRefused
from kline_tui.recorder.sink import SinkStats
from kline_tui.retry import Backoff
from kline_tui.safe_text import safe_text
from kline_tui.service.candles import MAX_CANDLES_PAGE, CandlesReply, HistoryRow, accepted
from kline_tui.service.protocol import (
    MAX_CLOSED,
    MAX_STREAMS,
    Added,
    AddedReply,
    AddStreams,
    AlertFired,
    AlertReply,
    AlertRow,
    Alerts,
    AlertsReply,
    CandleRow,
    Closed,
    ConnectionRow,
    ErrorReply,
    EventRow,
    Events,
    FiringRow,
    FlushReply,
    FormingRow,
    Message,
    MuteAlert,
    Recording,
    RecordingReply,
    RefusedReply,
    Removed,
    RemovedReply,
    Rows,
    ServerFacts,
    SinkRow,
    Snapshot,
    Status,
    StreamRow,
    StreamSnapshot,
    SymbolsReply,
)

__all__ = ["MirroredConnection", "RemoteError", "RemoteRecorder"]

log = logging.getLogger(__name__)

MAX_MSG_SIZE = 128 << 20  # one socket message: a snapshot of 2,000 streams is about 25 MB
MAX_REPLY = 4 << 20  # one HTTP reply (the symbols of a market are about 300 KB)
CONNECT_TIMEOUT_S = 10.0
SNAPSHOT_TIMEOUT_S = 60.0  # the first message may be large
REQUEST_TIMEOUT_S = 30.0  # a control request (adding streams asks the exchange first)
HEARTBEAT_S = 20.0


class RemoteError(Exception):
    """A request the recorder did not carry out, in one sentence; `status` is the HTTP status,
    None when the recorder could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class MirroredConnection(ConnectionStatus):
    """A recorder's connection as its server last reported it; `frames_per_s` is the server's
    measure (the mirror has no frame samples of its own)."""

    rate: float = 0.0

    def frames_per_s(self, now: float | None = None) -> float:
        return self.rate


_T = TypeVar("_T")
_LATEST_MS = 253_402_300_799_999  # 9999-12-31 23:59:59.999 UTC: the last instant a date shows


class _Lost(Exception):
    """The events socket ended; the message says why."""


_decoder: msgspec.json.Decoder[Message] = msgspec.json.Decoder(Message)
_encoder = msgspec.json.Encoder()


class RemoteRecorder:
    """A running recorder, mirrored through its service API, and steered through it."""

    def __init__(
        self,
        url: str,
        token: str | None,
        events: EventLog | None = None,
        *,
        backoff: Backoff | None = None,
        max_msg_size: int = MAX_MSG_SIZE,
        heartbeat_s: float = HEARTBEAT_S,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        url = url.strip().rstrip("/")
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"{safe_text(url, 200)} is not an http:// or https:// URL")
        self.url = url
        self.token = token
        self.events = events or EventLog()
        self.backoff = backoff or Backoff(base=0.5, cap=10.0)
        self.max_msg_size = max_msg_size
        self.heartbeat_s = heartbeat_s
        self.request_timeout_s = request_timeout_s
        # The mirror (see the module docstring).
        self.streams: dict[StreamKey, StreamState] = {}
        self.connections: list[ConnectionStatus] = []
        self.sink = SinkStats()
        self.recording = True
        self.server: ServerFacts | None = None
        # The recorder's alerts, and who is told of each firing it sends.
        self.alerts: list[AlertRow] = []
        self.alerts_dropped = 0  # alert rows refused: a stream that is none, an id twice
        self.alert_listeners: list[Callable[[Firing], None]] = []
        self.connected = False
        self.last_error: str | None = None
        self.next_attempt_at: float | None = None  # local monotonic time of the next try
        self.attempt = 0  # failed tries since the last success
        self.snapshots = 0  # snapshots applied (one per connect)
        self.messages = 0  # socket messages applied
        self._keys: dict[str, StreamKey] = {}
        self._instance: str | None = None
        self._last_seq = 0
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._closing = False
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._said_lost = False

    # -- life ----------------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def run(self) -> None:
        """Connect, mirror, and reconnect with backoff whenever the socket ends, until close()."""
        try:
            while not self._closing:
                self.next_attempt_at = None
                try:
                    await self._follow()
                    reason = "the connection ended"
                except _Lost as exc:
                    reason = str(exc)
                if self._closing:
                    break
                self._lost(reason)
                delay = self.backoff.delay(self.attempt)
                self.attempt += 1
                self.next_attempt_at = time.monotonic() + delay
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()  # close() ends the wait at once
        finally:
            self.connected = False
            self._connected.clear()

    async def wait_connected(self) -> None:
        """Until the mirror holds a snapshot and follows the recorder."""
        await self._connected.wait()

    async def close(self) -> None:
        """Stop following the recorder and close the sockets (idempotent)."""
        self._closing = True
        self._wake.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
                async with asyncio.timeout(2.0):
                    await ws.close()
        if self._http is not None:
            await self._http.close()

    async def _follow(self) -> None:
        """One connection: the snapshot, then every change until the socket ends (raises _Lost
        saying why)."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                ws = await self._session().ws_connect(
                    self.url + "/api/v1/events",
                    headers=self._headers(),
                    heartbeat=self.heartbeat_s,
                    compress=0,
                    max_msg_size=self.max_msg_size,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
                )
        except aiohttp.WSServerHandshakeError as exc:
            raise _Lost(_refusal(exc.status, exc.message)) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _Lost(f"cannot connect to {self.url}: {exc or type(exc).__name__}") from None
        self._ws = ws
        try:
            async with asyncio.timeout(SNAPSHOT_TIMEOUT_S):
                first = await ws.receive()
            snapshot = self._decode(first)
            if not isinstance(snapshot, Snapshot):
                raise _Lost("the recorder did not start with a snapshot")
            self._apply(snapshot)
            while True:  # _decode raises _Lost at the end, with the close frame's reason
                self._apply(self._decode(await ws.receive()))
        except TimeoutError:
            raise _Lost("the recorder sent no snapshot in time") from None
        except SpecError as exc:
            raise _Lost(f"the recorder sent a stream that cannot be: {exc}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _Lost(f"the connection failed: {exc or type(exc).__name__}") from None
        finally:
            self._ws = None
            with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
                async with asyncio.timeout(2.0):
                    await ws.close()

    def _decode(self, message: aiohttp.WSMessage) -> Message:
        if message.type is aiohttp.WSMsgType.CLOSE:
            said = safe_text(message.extra or "", 200) or f"code {message.data}"
            raise _Lost(f"the recorder closed the connection: {said}")
        if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            raise _Lost("the connection closed")
        if message.type is aiohttp.WSMsgType.ERROR:
            raise _Lost(f"the connection failed: {safe_text(message.data, 200)}")
        if message.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            raise _Lost(f"unexpected {message.type.name} message")
        try:
            return _decoder.decode(message.data)
        except msgspec.DecodeError as exc:
            raise _Lost(f"the recorder sent a message that cannot be read: {exc}") from None

    def _lost(self, reason: str) -> None:
        """The socket ended: keep the streams, say they are not followed now."""
        reason = safe_text(reason, 300)
        self.last_error = reason
        if self.connected or not self._said_lost:
            self.events.warning(f"recorder at {self.url}: {reason}; reconnecting")
            self._said_lost = True
        self.connected = False
        self._connected.clear()
        for state in self.streams.values():
            state.status = StreamStatus.RECONNECTING
        self.connections.clear()

    # -- applying messages ---------------------------------------------------------------------

    def _apply(self, message: Message) -> None:
        now = time.monotonic()
        self.messages += 1
        if isinstance(message, Rows):
            for row in message.streams:
                state = self.streams.get(self._key(row.stream))
                if state is not None:
                    _apply_row(state, row, now)
        elif isinstance(message, Closed):
            for item in message.candles:
                state = self.streams.get(self._key(item.stream))
                candle = None if state is None else _candle(item.candle, state.key.kind)
                if state is not None and candle is not None:
                    state.closed.append(candle)
        elif isinstance(message, Events):
            self._emit(message.events)
        elif isinstance(message, Status):
            self._status(message.server, message.connections, message.sink, now)
        elif isinstance(message, Recording):
            self.recording = message.recording
            if self.server is not None:
                self.server.recording = message.recording
        elif isinstance(message, Added):
            for row in message.streams:
                self._put_stream(row, now)
        elif isinstance(message, Removed):
            for spec in message.streams:
                self.streams.pop(self._key(spec), None)
        elif isinstance(message, Snapshot):
            self._snapshot(message, now)
        elif isinstance(message, Alerts):
            self.alerts = self._alert_rows(message.alerts)
        elif isinstance(message, AlertFired):
            for fired in message.firings:
                firing = _firing(fired)
                for listener in self.alert_listeners:
                    listener(firing)

    def _snapshot(self, snapshot: Snapshot, now: float) -> None:
        """Replace the mirror's contents (objects kept) with the recorder's state."""
        server = snapshot.server
        if server.instance != self._instance:
            self._instance, self._last_seq = server.instance, 0
        self._status(server, snapshot.connections, snapshot.sink, now)
        keep = {self._put_stream(row, now) for row in snapshot.streams}
        for key in [k for k in self.streams if k not in keep]:
            del self.streams[key]
        self._emit(snapshot.events)
        self.alerts = self._alert_rows(snapshot.alerts)
        self.snapshots += 1
        self.attempt = 0
        self.last_error = None
        self.next_attempt_at = None
        self.connected = True
        self._connected.set()
        self._said_lost = False
        self.events.info(f"attached to the recorder at {self.url}: {len(self.streams)} streams")

    def _put_stream(self, row: StreamSnapshot, now: float) -> StreamKey:
        key = self._key(row.stream)
        keep = min(self.server.keep_closed if self.server else MAX_CLOSED, MAX_CLOSED)
        state = self.streams.get(key)
        if state is None:
            if len(self.streams) >= MAX_STREAMS:
                raise _Lost(f"the recorder sent more than {MAX_STREAMS} streams")
            state = self.streams[key] = StreamState(key)
        candles = [c for r in row.closed if (c := _candle(r, key.kind)) is not None]
        if state.closed.maxlen == keep:
            state.closed.clear()
            state.closed.extend(candles)
        else:
            state.closed = collections.deque(candles, maxlen=keep)
        _apply_row(state, row, now)
        return key

    def _status(
        self, server: ServerFacts, rows: list[ConnectionRow], sink: SinkRow, now: float
    ) -> None:
        server.data_dir = safe_text(server.data_dir, 1000)
        server.demo = None if server.demo is None else safe_text(server.demo, 100)
        server.version = safe_text(server.version, 100)
        self.server = server
        self.recording = server.recording
        self.connections[:] = [_connection(row, now) for row in rows]
        for name in SinkRow.__struct_fields__:
            value = getattr(sink, name)
            setattr(self.sink, name, safe_text(value, 300) if isinstance(value, str) else value)

    def _emit(self, rows: list[EventRow]) -> None:
        """Re-emit the recorder's events into the local log, each once (by sequence number)."""
        for row in rows:
            if row.seq <= self._last_seq:
                continue
            self._last_seq = row.seq
            self.events.emit(row.level, row.message, at=row.at)

    def _key(self, spec: str) -> StreamKey:
        key = self._keys.get(spec)
        if key is None:
            if len(self._keys) >= 2 * MAX_STREAMS:
                self._keys.clear()
            key = self._keys[spec] = StreamKey.parse(spec)  # SpecError: refused message
        return key

    # -- control -------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        """One request; its body, bounded. Raises StreamRefused on 422, RemoteError else."""
        headers = self._headers()
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with asyncio.timeout(self.request_timeout_s):
                async with self._session().request(
                    method, self.url + path, data=body, headers=headers
                ) as response:
                    status = response.status
                    data = bytearray()
                    async for chunk in response.content.iter_chunked(64 * 1024):
                        data += chunk
                        if len(data) > MAX_REPLY:
                            raise RemoteError(f"the recorder's reply to {path} is too large")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise RemoteError(
                f"cannot reach the recorder at {self.url}: {exc or type(exc).__name__}"
            ) from None
        if status == 422:
            with contextlib.suppress(msgspec.DecodeError):
                refused = msgspec.json.decode(data, type=RefusedReply)
                raise StreamRefused([safe_text(p, 300) for p in refused.problems[:100]])
        if status >= 400:
            try:
                said = safe_text(msgspec.json.decode(data, type=ErrorReply).error, 300)
            except msgspec.DecodeError:
                said = f"HTTP {status}"
            raise RemoteError(f"the recorder refused {method} {path}: {said}", status)
        return bytes(data)

    @staticmethod
    def _reply(data: bytes, kind: type[_T]) -> _T:
        try:
            return msgspec.json.decode(data, type=kind)
        except msgspec.DecodeError as exc:
            raise RemoteError(f"the recorder's reply cannot be read: {exc}") from None

    async def add(self, keys: Iterable[StreamKey]) -> list[StreamKey]:
        """Watch more streams on the recorder; returns those it was not watching. Raises
        StreamRefused (one sentence per stream) when the exchange does not list one."""
        specs = [str(k) for k in keys]
        if not specs:
            return []
        data = await self._call("POST", "/api/v1/streams", _encoder.encode(AddStreams(specs)))
        added = self._reply(data, AddedReply).added
        try:
            return [StreamKey.parse(s) for s in added]
        except SpecError as exc:
            raise RemoteError(f"the recorder's reply cannot be read: {exc}") from None

    async def remove(self, keys: Iterable[StreamKey]) -> list[StreamKey]:
        """Stop watching streams on the recorder; returns those it was watching."""
        removed = []
        for key in keys:
            path = "/api/v1/streams/" + urllib.parse.quote(str(key), safe=":")
            try:
                self._reply(await self._call("DELETE", path), RemovedReply)
            except RemoteError as exc:
                if exc.status == 404:
                    continue  # not watched (any more)
                raise
            removed.append(key)
            self.streams.pop(key, None)
        return removed

    async def candles(
        self,
        key: StreamKey,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = MAX_CANDLES_PAGE,
        newest_first: bool = False,
    ) -> tuple[list[HistoryRow], int | None]:
        """One page of the candles the recorder's dataset holds of `key` opening in
        [start_ms, end_ms) (see `service.candles`): the rows, oldest first, each open time
        once, only sane ones within the range asked; and the next page's cursor, None at the
        end."""
        params = {"stream": str(key), "limit": str(max(1, min(limit, MAX_CANDLES_PAGE)))}
        if start_ms is not None:
            params["start"] = str(start_ms)
        if end_ms is not None:
            params["end"] = str(end_ms)
        if newest_first:
            params["order"] = "desc"
        data = await self._call("GET", "/api/v1/candles?" + urllib.parse.urlencode(params))
        try:
            return accepted(self._reply(data, CandlesReply), key.kind, start_ms, end_ms)
        except ValueError as exc:
            raise RemoteError(f"the recorder's reply cannot be read: {exc}") from None

    async def pause(self) -> None:
        """Pause recording (the live view goes on)."""
        reply = self._reply(await self._call("POST", "/api/v1/pause"), RecordingReply)
        self.recording = reply.recording

    async def resume(self) -> None:
        """Resume recording, starting with the candles that closed during the pause."""
        reply = self._reply(await self._call("POST", "/api/v1/resume"), RecordingReply)
        self.recording = reply.recording

    async def flush(self) -> int:
        """Write what the recorder buffers now; returns the rows written."""
        return self._reply(await self._call("POST", "/api/v1/flush"), FlushReply).written

    async def symbols(self, market: Market) -> list[str]:
        """The market's tradable symbols, as the recorder's exchange lists them."""
        data = await self._call("GET", f"/api/v1/symbols/{market.value}")
        reply = self._reply(data, SymbolsReply)
        symbols = []
        for name in reply.symbols:
            with contextlib.suppress(SpecError):
                symbols.append(validate_symbol(name))
        return symbols

    async def list_alerts(self) -> list[AlertRow]:
        """The recorder's alerts (also kept in `alerts` by the events socket)."""
        reply = self._reply(await self._call("GET", "/api/v1/alerts"), AlertsReply)
        return self._alert_rows(reply.alerts)

    async def add_alert(self, config: AlertConfig) -> AlertRow:
        """Add an alert on the recorder (RemoteError 400: it cannot work, with why)."""
        data = await self._call("POST", "/api/v1/alerts", msgspec.json.encode(config))
        return self._one_alert(self._reply(data, AlertReply).alert)

    async def mute_alert(self, alert_id: str, muted: bool) -> AlertRow:
        """Mute or unmute an alert of the recorder (RemoteError 404: no such alert)."""
        path = f"/api/v1/alerts/{urllib.parse.quote(alert_id, safe='')}/mute"
        data = await self._call("POST", path, msgspec.json.encode(MuteAlert(muted)))
        return self._one_alert(self._reply(data, AlertReply).alert)

    async def delete_alert(self, alert_id: str) -> AlertRow:
        """Delete an alert of the recorder (RemoteError 404: no such alert)."""
        path = f"/api/v1/alerts/{urllib.parse.quote(alert_id, safe='')}"
        return self._one_alert(self._reply(await self._call("DELETE", path), AlertReply).alert)

    def _alert_rows(self, rows: Iterable[AlertRow]) -> list[AlertRow]:
        """The rows that can be real, each id once; the rest dropped and counted."""
        kept: dict[str, AlertRow] = {}
        for row in rows:
            safe = _alert(row)
            if safe is None or safe.id in kept:
                self.alerts_dropped += 1
            else:
                kept[safe.id] = safe
        return list(kept.values())

    def _one_alert(self, row: AlertRow) -> AlertRow:
        safe = _alert(row)
        if safe is None:
            self.alerts_dropped += 1
            raise RemoteError("the recorder answered with an alert that cannot be real")
        return safe


# -- rows into the core's types --------------------------------------------------------------------


def _alert(row: AlertRow) -> AlertRow | None:
    """An alert as the recorder sent it, its text made safe for a terminal and its times
    bounded; None when its stream is not a stream spec."""
    try:
        row.stream = str(StreamKey.parse(row.stream))
    except SpecError:
        return None
    row.description = safe_text(row.description, 200)
    row.id = safe_text(row.id, 64)
    row.rule = safe_text(row.rule, 32)
    if row.last_fired_at is not None and not 0 <= row.last_fired_at <= _LATEST_MS:
        row.last_fired_at = None  # a date no clock can show: not shown
    return row


def _firing(row: FiringRow) -> Firing:
    return Firing(
        id=safe_text(row.id, 200),
        alert=safe_text(row.alert, 64),
        stream=safe_text(row.stream, 64),
        rule=safe_text(row.rule, 32),
        value=row.value,
        price=row.price,
        open_time=row.open_time,
        fired_at=row.fired_at,
        message=safe_text(row.message, 300),
    )


def _candle(row: CandleRow, kind: Kind) -> Candle | None:
    candle = Candle(*row)
    return candle if kind_is_sane(candle, kind) else None


def _forming(key: StreamKey, row: FormingRow | None) -> WireKline | None:
    if row is None:
        return None
    kline = WireKline(*row[:11], key.symbol, key.interval.value, row[11])
    return kline if kind_is_sane(kline, key.kind) else None


def _apply_row(state: StreamState, row: StreamRow, now: float) -> None:
    """A row's values into a stream's state, in place."""
    forming = _forming(state.key, row.forming)
    if forming is not None or row.forming is None:
        state.forming = forming
    state.status = row.status
    state.event_time = row.event_time
    state.received_at = None if row.age_s is None else now - row.age_s
    state.updates = row.updates
    state.recorded = row.recorded
    state.duplicates = row.duplicates
    state.gaps = row.gaps
    state.stalls = row.stalls
    state.backfill = row.backfill
    state.implausible = row.implausible
    state.error = None if row.error is None else safe_text(row.error, 300)
    state.conn_id = row.conn_id


def _connection(row: ConnectionRow, now: float) -> MirroredConnection:
    def at(seconds: float | None, sign: float) -> float | None:
        return None if seconds is None else now + sign * seconds

    return MirroredConnection(
        conn_id=row.conn_id,
        market=row.market,
        state=row.state,
        streams=row.streams,
        connected_at=at(row.connected_for_s, -1),
        attempt=row.attempt,
        next_attempt_at=at(row.next_attempt_in_s, 1),
        last_error=None if row.last_error is None else safe_text(row.last_error, 200),
        reconnects=row.reconnects,
        frames=row.frames,
        malformed=row.malformed,
        lag_ms=row.lag_ms,
        last_frame_at=at(row.last_frame_age_s, -1),
        retiring=row.retiring,
        rate=row.frames_per_s,
    )


def _refusal(status: int, message: str) -> str:
    """Why the events socket was refused, in words."""
    if status == 401:
        return "the recorder refused the token (401): check KLINE_TUI_TOKEN or the token file"
    if status == 429:
        return "too many wrong tokens from here (429): waiting before trying again"
    if status == 503:
        return "the recorder is starting, stopping or full (503)"
    return f"the recorder refused the connection: {status} {safe_text(message, 100)}"

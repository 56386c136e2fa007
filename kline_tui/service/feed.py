"""The runtime's state as service messages: the snapshot, and the changes every client receives.

One `Feed` per service. While at least one events socket is open, a tick runs `UPDATE_HZ` times a
second: it walks the hub's streams once, comparing each with what the last tick sent (a handful
of counters and the state, no copy of the candle), and builds the tick's messages (see
`kline_tui.service.protocol` for their order). Each message is encoded once and the same bytes
are queued for every client. With no client, nothing runs: the closed-candle and event listeners
return at once, and the cost of the service is its idle sockets.

Closed candles come from the hub's `closed_listeners` (called where a candle joins a stream's
`closed` deque) and events from the event log's subscription, both kept until the next tick;
neither is ever coalesced. A client that joins gets a tick of its own first (sent to those
already there), so that its snapshot and the changes after it neither overlap nor leave a gap.

Each client has its own bounded queue (`ClientQueue`): messages and bytes waiting to be written.
A client whose queue would go past either bound, or whose socket has not taken a message for
`send_timeout_s`, is closed with `CLOSE_TOO_SLOW` and a reason, and its queue is freed at once:
what a slow client costs the recorder is bounded by the queue's bound, plus the message being
written and the socket's write buffer (`writer_limit`), never by how far behind it is.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import functools
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from kline_tui.alerts.rules import Alert, Firing
from kline_tui.binance.connection import ConnectionStatus
from kline_tui.model import CandleLike, StreamKey
from kline_tui.recorder.events import Event
from kline_tui.recorder.hub import StreamState
from kline_tui.recorder.pipeline import Pipeline
from kline_tui.recorder.sink import SinkStats
from kline_tui.runtime import Runtime
from kline_tui.safe_text import safe_text
from kline_tui.service.protocol import (
    CLOSE_TOO_SLOW,
    MAX_CLOSED,
    UPDATE_HZ,
    Added,
    AlertFired,
    AlertRow,
    Alerts,
    Closed,
    ClosedCandle,
    ConnectionRow,
    EventRow,
    Events,
    FiringRow,
    Recording,
    Removed,
    Rows,
    ServerFacts,
    SinkRow,
    Snapshot,
    Status,
    StreamRow,
    StreamSnapshot,
)

__all__ = [
    "RECENT_EVENTS",
    "ClientQueue",
    "Feed",
    "alert_row",
    "connection_row",
    "firing_row",
    "sink_row",
    "stream_row",
    "stream_snapshot",
]

log = logging.getLogger(__name__)

RECENT_EVENTS = 200  # events a snapshot carries
STATUS_EVERY_S = 1.0  # connections, sink and server facts this often
DEFAULT_MAX_MESSAGES = 4096  # a client's queue: messages...
DEFAULT_MAX_BYTES = 8 << 20  # ...and bytes (about 8 s of 1,000 busy streams)
DEFAULT_SEND_TIMEOUT_S = 30.0  # one message's write may take this long
CLOSE_TIMEOUT_S = 2.0  # a close frame's wait, after which the socket is aborted
SLOW_CLOSE_TIMEOUT_S = 1.0  # the same for a client too slow to take its messages
TRIM_EVERY_S = 1.0  # freed memory is handed back to the system at most this often


# -- the runtime's objects as messages -----------------------------------------------------------


def stream_row(state: StreamState, now: float) -> StreamRow:
    """One stream's row; `now` is the local monotonic time its age is measured at."""
    k = state.forming
    received = state.received_at
    return StreamRow(
        stream=str(state.key),
        status=state.status,
        forming=None if k is None else (*k.as_row(), bool(getattr(k, "closed", False))),
        event_time=state.event_time,
        age_s=None if received is None else max(0.0, round(now - received, 3)),
        updates=state.updates,
        recorded=state.recorded,
        duplicates=state.duplicates,
        gaps=state.gaps,
        stalls=state.stalls,
        backfill=state.backfill,
        implausible=state.implausible,
        error=state.error,
        conn_id=state.conn_id,
    )


def stream_snapshot(
    state: StreamState, now: float, leave_out: frozenset[int] = frozenset()
) -> StreamSnapshot:
    """A stream with its closed candles (oldest first), less those whose `id` is in
    `leave_out` (they go in the tick's `closed` message instead)."""
    row = stream_row(state, now)
    closed = [c.as_row() for c in state.closed if id(c) not in leave_out][-MAX_CLOSED:]
    return StreamSnapshot(**msgspec.structs.asdict(row), closed=closed)


def _age(now: float, then: float | None) -> float | None:
    return None if then is None else round(now - then, 3)


def connection_row(status: ConnectionStatus, now: float, clock_rate: float = 1.0) -> ConnectionRow:
    """A connection's status with its monotonic times as ages and durations, and its lag in
    real ms: measured in exchange ms, it is divided by `clock_rate`, how fast the market's
    exchange clock runs (a simulator's speed), so a client sees the lag a person can judge."""
    due = status.next_attempt_at
    lag = status.lag_ms
    if lag is not None and math.isfinite(clock_rate) and clock_rate > 0:
        lag /= clock_rate
    return ConnectionRow(
        conn_id=status.conn_id,
        market=status.market,
        state=status.state,
        streams=status.streams,
        connected_for_s=_age(now, status.connected_at),
        attempt=status.attempt,
        next_attempt_in_s=None if due is None else round(due - now, 3),
        last_error=status.last_error,
        reconnects=status.reconnects,
        frames=status.frames,
        malformed=status.malformed,
        lag_ms=lag,
        last_frame_age_s=_age(now, status.last_frame_at),
        retiring=status.retiring,
        frames_per_s=round(status.frames_per_s(now), 2),
    )


def _connection_rows(pipeline: Pipeline, now: float) -> list[ConnectionRow]:
    clock = pipeline.rest.clock
    return [connection_row(c, now, clock(c.market).rate) for c in pipeline.hub.connection_status()]


def sink_row(stats: SinkStats) -> SinkRow:
    """The sink's counters, field for field."""
    return SinkRow(
        rows_buffered=stats.rows_buffered,
        rows_written=stats.rows_written,
        files_written=stats.files_written,
        flushes=stats.flushes,
        last_flush_at=stats.last_flush_at,
        last_flush_ms=stats.last_flush_ms,
        errors=stats.errors,
        last_error=stats.last_error,
        failing=stats.failing,
        dropped=stats.dropped,
        dead_letters=stats.dead_letters,
        last_dead_letter=stats.last_dead_letter,
    )


def alert_row(alert: Alert) -> AlertRow:
    """An alert as the API lists it."""
    config = alert.config
    return AlertRow(
        id=alert.id,
        stream=str(alert.key),
        rule=alert.rule.value,
        value=config.value,
        window=config.window,
        cooldown_s=config.cooldown_s,
        muted=config.muted,
        description=alert.describe(),
        fired=alert.fired,
        last_fired_at=alert.last_fired_at,
    )


def firing_row(firing: Firing) -> FiringRow:
    """A firing as the events socket sends it (the webhook's body, field for field)."""
    return FiringRow(**firing.body())  # type: ignore[arg-type]


def _signature(state: StreamState) -> tuple[Any, ...]:
    """What a row shows besides its age: when it differs from the last tick's, the row is sent."""
    return (
        state.updates,
        state.status,
        state.recorded,
        state.backfill,
        state.stalls,
        state.error,
        state.conn_id,
        state.duplicates,
        state.gaps,
        state.implausible,
    )


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return function


# -- one client ----------------------------------------------------------------------------------


class ClientQueue:
    """One events socket's outgoing messages: bounded in count and bytes, written by one task.

    `put` never waits: it queues or, past a bound, refuses, and the feed closes the client.
    Counters (`backlog_bytes`, `peak_backlog_bytes`, `sent_*`) are what the service reports and
    what the tests check the bounds with.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
    ) -> None:
        self.ws = ws
        self.request = request
        self.peer = safe_text(request.remote or "?", 100)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.send_timeout_s = send_timeout_s
        self.connected_at = time.monotonic()
        self.backlog: collections.deque[bytes] = collections.deque()
        self.backlog_bytes = 0
        self.peak_backlog_bytes = 0
        self.forced_bytes = 0  # queued past the bounds (the snapshot)
        self.sent_messages = 0
        self.sent_bytes = 0
        self.closed_reason: str | None = None
        self.sending_since: float | None = None  # the write under way started then
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    def put(self, data: bytes, *, force: bool = False) -> bool:
        """Queue one message; False (nothing queued) when it would pass a bound. `force` queues
        it anyway (the snapshot, bigger than the bound on a large recorder)."""
        if self.closed_reason is not None:
            return False
        backlog = self.backlog
        if not force and (
            len(backlog) >= self.max_messages or self.backlog_bytes + len(data) > self.max_bytes
        ):
            return False
        if force:
            self.forced_bytes += len(data)
        backlog.append(data)
        self.backlog_bytes += len(data)
        if self.backlog_bytes > self.peak_backlog_bytes:
            self.peak_backlog_bytes = self.backlog_bytes
        self._wake.set()
        return True

    def start(self) -> None:
        """Start writing the queue to the socket."""
        self._writer = asyncio.create_task(self._write(), name=f"events client {self.peer}")

    async def _write(self) -> None:
        ws, backlog = self.ws, self.backlog
        while True:
            while not backlog:
                self._wake.clear()
                await self._wake.wait()
            data = backlog.popleft()
            self.backlog_bytes -= len(data)
            self.sending_since = time.monotonic()
            await ws.send_frame(data, WSMsgType.TEXT)
            self.sending_since = None
            self.sent_messages += 1
            self.sent_bytes += len(data)

    def stuck(self, now: float) -> bool:
        """A write has waited longer than `send_timeout_s` for the socket."""
        since = self.sending_since
        return since is not None and now - since > self.send_timeout_s

    def close(
        self, code: int, reason: str, timeout_s: float = CLOSE_TIMEOUT_S
    ) -> asyncio.Task[None]:
        """Close with `code` and `reason` (a close frame, then the socket is aborted if it is not
        closed within `timeout_s`); the queue is freed at once. Idempotent."""
        if self._closing is None:
            self.closed_reason = reason
            self.backlog.clear()
            self.backlog_bytes = 0
            self._closing = asyncio.ensure_future(self._close(code, reason, timeout_s))
        return self._closing

    async def _close(self, code: int, reason: str, timeout_s: float) -> None:
        # The writer is left alone meanwhile: it may wait for the socket to drain, and aiohttp's
        # close waits on the same future, which cancelling the writer would cancel for both.
        try:
            async with asyncio.timeout(timeout_s):
                await self.ws.close(code=code, message=reason.encode()[:120])
        except (TimeoutError, ConnectionError, RuntimeError):
            pass  # a socket that does not take the close frame is aborted below
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # Not this task's cancellation: a drain future aiohttp shares was cancelled.
        finally:
            # A client that never reads never lets a full write buffer drain: abort, which
            # frees it (after a clean close this does nothing).
            transport = self.request.transport
            if transport is not None:
                transport.abort()
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.cancel()
                # The writer's traceback holds the message it was writing and this queue:
                # dropped here, it is freed now rather than by the next garbage collection.
                await asyncio.gather(writer, return_exceptions=True)
                del writer

    async def wait_closed(self) -> None:
        """Until the client is closed: its socket ended, or `close` finished."""
        if self._closing is not None:
            await asyncio.shield(self._closing)
        elif self._writer is not None:
            await asyncio.wait([self._writer])


# -- every client ------------------------------------------------------------------------------


class Feed:
    """Builds the snapshot and the ticks from a runtime, and hands them to every client."""

    def __init__(
        self,
        runtime: Runtime,
        facts: Callable[[], ServerFacts],
        *,
        update_hz: float = UPDATE_HZ,
    ) -> None:
        self.runtime = runtime
        self.facts = facts
        self.period_s = 1.0 / update_hz
        self.clients: set[ClientQueue] = set()
        self.recent: collections.deque[EventRow] = collections.deque(maxlen=RECENT_EVENTS)
        self.ticks = 0
        self.slow_clients = 0  # clients closed for not keeping up
        self._seq = 0
        self._encoder = msgspec.json.Encoder()
        self._sent: dict[StreamKey, tuple[StreamState, tuple[Any, ...]]] = {}
        self._closed: list[tuple[StreamKey, CandleLike]] = []
        self._events: list[EventRow] = []
        self._firings: list[FiringRow] = []
        self._alerts_version = runtime.alerts.version
        self._recording = runtime.recording
        self._status_at = 0.0
        self._hooked: Any = None  # the hub whose closed candles we listen to
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._trimmed_at = 0.0
        self._trim: asyncio.TimerHandle | None = None
        for event in list(runtime.events.recent)[-RECENT_EVENTS:]:
            self._on_event(event)
        runtime.events.subscribe(self._on_event)
        runtime.history_listeners.append(self._on_history)
        runtime.alerts.listeners.append(self._on_fired)

    # -- listeners (called by the hub and the event log, on the loop) -------------------------

    def _on_event(self, event: Event) -> None:
        if self._stopped:
            return
        self._seq += 1
        row = EventRow(self._seq, event.at, event.level, event.message)
        self.recent.append(row)
        if self.clients:
            self._events.append(row)

    def _on_fired(self, firing: Firing) -> None:
        if self.clients and not self._stopped:
            self._firings.append(firing_row(firing))

    def alert_rows(self) -> list[AlertRow]:
        """Every alert of the runtime, as the API lists them."""
        return [alert_row(alert) for alert in self.runtime.alerts.alerts.values()]

    def _on_history(self, keys: list[StreamKey]) -> None:
        """Older candles were filled in: the next tick sends these streams whole again (as
        `added`, which a client applies in place), so charts already open fill too."""
        for key in keys:
            self._sent.pop(key, None)

    def _on_closed(self, key: StreamKey, candle: CandleLike) -> None:
        if self.clients:
            self._closed.append((key, candle))

    def _hook(self) -> bool:
        """Listen to the pipeline's closed candles once it exists; False while it does not."""
        pipeline = self.runtime.pipeline
        if pipeline is None:
            return False
        if self._hooked is not pipeline.hub:
            self._unhook()
            pipeline.hub.closed_listeners.append(self._on_closed)
            self._hooked = pipeline.hub
        return True

    def _unhook(self) -> None:
        if self._hooked is not None:
            with contextlib.suppress(ValueError):
                self._hooked.closed_listeners.remove(self._on_closed)
            self._hooked = None

    # -- messages ------------------------------------------------------------------------------

    def snapshot(self, now: float | None = None) -> Snapshot:
        """Everything now: server facts, streams with their closed candles, connections, sink,
        the latest events. Raises RuntimeError while there is no pipeline."""
        pipeline = self.runtime.pipeline
        if pipeline is None:
            raise RuntimeError("the recorder has not started")
        now = time.monotonic() if now is None else now
        return Snapshot(
            server=self.facts(),
            streams=[stream_snapshot(s, now) for s in pipeline.hub.streams.values()],
            connections=_connection_rows(pipeline, now),
            sink=sink_row(pipeline.sink.stats),
            events=list(self.recent),
            alerts=self.alert_rows(),
        )

    def _status(self, now: float) -> Status | None:
        pipeline = self.runtime.pipeline
        if pipeline is None:
            return None
        return Status(
            server=self.facts(),
            connections=_connection_rows(pipeline, now),
            sink=sink_row(pipeline.sink.stats),
        )

    def tick(self, now: float | None = None) -> list[bytes]:
        """Build, encode and queue what changed since the last tick; returns the encoded
        messages (for tests and accounting)."""
        pipeline = self.runtime.pipeline
        if pipeline is None or not self._hook():
            return []
        now = time.monotonic() if now is None else now
        self.ticks += 1
        messages: list[Any] = []
        streams, sent = pipeline.hub.streams, self._sent
        rows: list[StreamRow] = []
        added: list[StreamState] = []
        removed: list[str] = []
        for key, state in streams.items():
            signature = _signature(state)
            previous = sent.get(key)
            if previous is None or previous[0] is not state:
                if previous is not None:  # removed and added again since the last tick
                    removed.append(str(key))
                added.append(state)
                sent[key] = (state, signature)
            elif previous[1] != signature:
                rows.append(stream_row(state, now))
                sent[key] = (state, signature)
        if len(sent) > len(streams):
            gone = [key for key in sent if key not in streams]
            for key in gone:
                del sent[key]
            removed += [str(key) for key in gone]
        closed, self._closed = self._closed, []
        events, self._events = self._events, []
        if removed:
            messages.append(Removed(removed))
        if added:
            # A new stream's candles that closed since the last tick go in this tick's `closed`
            # message, not in its snapshot: the client appends them once, in order.
            pending: dict[StreamKey, set[int]] = collections.defaultdict(set)
            for key, candle in closed:
                pending[key].add(id(candle))
            messages.append(
                Added([stream_snapshot(s, now, frozenset(pending.get(s.key, ()))) for s in added])
            )
        candles = [
            ClosedCandle(str(key), candle.as_row())
            for key, candle in closed
            if key in streams and streams[key] is sent[key][0]
        ]
        if candles:
            messages.append(Closed(candles))
        if events:
            messages.append(Events(events))
        if rows:
            messages.append(Rows(rows))
        if self.runtime.recording != self._recording:
            self._recording = self.runtime.recording
            messages.append(Recording(self._recording))
        if self.runtime.alerts.version != self._alerts_version:
            self._alerts_version = self.runtime.alerts.version
            messages.append(Alerts(self.alert_rows()))
        firings, self._firings = self._firings, []
        if firings:
            messages.append(AlertFired(firings))
        if now - self._status_at >= STATUS_EVERY_S:
            self._status_at = now
            status = self._status(now)
            if status is not None:
                messages.append(status)
        encoded = [self._encoder.encode(m) for m in messages]
        for data in encoded:
            self._broadcast(data)
        self._close_stuck(now)
        return encoded

    def _broadcast(self, data: bytes) -> None:
        for client in list(self.clients):
            if not client.put(data):
                self._drop(
                    client,
                    f"too slow: {len(client.backlog)} messages, {client.backlog_bytes} bytes "
                    "waiting",
                )

    def _close_stuck(self, now: float) -> None:
        for client in list(self.clients):
            if client.stuck(now):
                self._drop(
                    client, f"too slow: one message waited {client.send_timeout_s:g} s for it"
                )

    def _drop(self, client: ClientQueue, reason: str) -> None:
        self.clients.discard(client)
        self.slow_clients += 1
        self.runtime.events.warning(f"events client {client.peer} disconnected: {reason}")
        closing = client.close(CLOSE_TOO_SLOW, reason, SLOW_CLOSE_TIMEOUT_S)
        closing.add_done_callback(lambda _: self._release_memory())

    def _release_memory(self) -> None:
        """Hand what a dropped client held back to the system, at most once every TRIM_EVERY_S.

        glibc keeps freed heap memory for later: without this, the RSS of a recorder that
        dropped slow clients would stay at its high-water mark, indistinguishable from a leak.
        """
        if self._trim is not None:
            return
        wait = self._trimmed_at + TRIM_EVERY_S - time.monotonic()
        if wait > 0:
            self._trim = asyncio.get_running_loop().call_later(wait, self._trim_now)
        else:
            self._trim_now()

    def _trim_now(self) -> None:
        self._trim = None
        self._trimmed_at = time.monotonic()
        trim = _malloc_trim()
        if trim is not None:
            trim(0)

    # -- clients -------------------------------------------------------------------------------

    def join(self, client: ClientQueue) -> None:
        """Queue the snapshot for a new client and include it in every tick from now on.

        The clients already there get a tick first, so the snapshot is the state right after
        it: the next tick's changes are exactly what happened since.
        """
        self.tick()
        now = time.monotonic()
        client.put(self._encoder.encode(self.snapshot(now)), force=True)
        self.clients.add(client)
        client.start()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="events feed")

    def leave(self, client: ClientQueue) -> None:
        """Forget a client whose socket closed."""
        self.clients.discard(client)

    async def _run(self) -> None:
        """Tick at `period_s` while any client is there; never faster, however late a tick."""
        next_at = time.monotonic()
        while self.clients and not self._stopped:
            next_at += self.period_s
            delay = next_at - time.monotonic()
            if delay < 0:  # the loop was busy: start the schedule over rather than catch up
                next_at, delay = time.monotonic() + self.period_s, self.period_s
            await asyncio.sleep(delay)
            try:
                self.tick()
            except Exception as exc:  # a bug here must not end every client's feed
                log.exception("events feed tick failed")
                self.runtime.events.error(f"events feed: {type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)

    async def close(self, code: int, reason: str) -> None:
        """Close every client with `code` and `reason`, and stop ticking."""
        self._stopped = True
        self._unhook()
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
        clients, self.clients = list(self.clients), set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        closing = [client.close(code, reason) for client in clients]
        if closing:
            await asyncio.wait(closing, timeout=CLOSE_TIMEOUT_S + 1.0)

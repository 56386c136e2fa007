"""The service API's messages, declared once as msgspec Structs and encoded with msgspec.json.

HTTP (`kline_tui.service.api`):

    GET  /healthz                      Health                 200 ok / starting, 503 otherwise
    GET  /metrics                      Prometheus text        (`kline_tui.service.metrics`)
    GET  /api/v1/state                 Snapshot
    GET  /api/v1/candles?stream=...    candles.CandlesReply: a page of recorded candles
    GET  /api/v1/events                WebSocket of Message: a Snapshot, then the changes
    POST /api/v1/streams               AddStreams -> AddedReply       (422: RefusedReply)
    DELETE /api/v1/streams/{spec}      RemovedReply
    POST /api/v1/pause, /resume        RecordingReply
    POST /api/v1/flush                 FlushReply
    GET  /api/v1/symbols/{market}      SymbolsReply
    GET  /api/v1/alerts                AlertsReply
    POST /api/v1/alerts                AlertConfig (an [[alerts]] table) -> AlertReply, 201
    POST /api/v1/alerts/{id}/mute      MuteAlert -> AlertReply (404: no such alert)
    DELETE /api/v1/alerts/{id}         AlertReply (404: no such alert)
    any error                          ErrorReply: {"error": "one sentence"}

The events socket sends text frames, each one JSON object whose `type` names it (a tagged
union, `Message`): first a `snapshot`, then, at most `UPDATE_HZ` times a second, what changed
since the last tick, in this order: `removed` and `added` streams, `closed` candles, `events`,
`rows` (the forming candle and counters of every stream that changed, coalesced: a stream that
updated twenty times since the last tick is one row), `recording` when it flips, `alerts` (the
whole list, small) when one was added, muted, deleted or fired, `alert` with the firings since
the last tick (never dropped), and about once a second `status` (connections, sink, server
facts). Each tick's messages are encoded once and the
same bytes go to every client. Closed candles and events are never coalesced nor dropped: a client
too slow to take them is disconnected instead (close code `CLOSE_TOO_SLOW`).

Candles are compact arrays, `CandleRow`: the dataset's columns after `symbol`, in their order
(`model.CandleRow`: open_time, close_time, open, high, low, close, volume, quote_volume,
taker_buy_volume, taker_buy_quote_volume, trades), as `Candle.as_row()` gives them; a forming
candle (`FormingRow`) adds the `closed` flag. A 1,000-stream snapshot with 120 closed candles each
is about half the size it would be with field names.

Times: exchange times are epoch milliseconds (`event_time`, candles); local times are sent as
ages and durations in seconds measured by the server when it built the message (`age_s`,
`connected_for_s`, `next_attempt_in_s`), since two machines' monotonic clocks mean nothing to each
other; wall times (`started_at`, an event's `at`, the sink's `last_flush_at`) are epoch seconds.

Everything a client decodes is bounded here (`Meta(max_length=...)` on every list and string,
enums for every state), so a server that sends garbage gets its message refused whole, not
half-applied; text that reaches a terminal still goes through `safe_text` on the client.
"""

from __future__ import annotations

import functools
import importlib.metadata
from typing import Annotated

import msgspec
from msgspec import Meta

from kline_tui.binance.connection import ConnectionState
from kline_tui.model import Market
from kline_tui.recorder.hub import StreamStatus

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_TOO_SLOW",
    "MAX_ADD",
    "MAX_SPEC",
    "PROTOCOL",
    "UPDATE_HZ",
    "AddStreams",
    "Added",
    "AddedReply",
    "AlertFired",
    "AlertReply",
    "AlertRow",
    "Alerts",
    "AlertsReply",
    "CandleRow",
    "Closed",
    "ClosedCandle",
    "ConnectionRow",
    "ErrorReply",
    "EventRow",
    "Events",
    "FiringRow",
    "FlushReply",
    "FormingRow",
    "Health",
    "Message",
    "MuteAlert",
    "Recording",
    "RecordingReply",
    "RefusedReply",
    "Removed",
    "RemovedReply",
    "Rows",
    "ServerFacts",
    "SinkRow",
    "Snapshot",
    "Status",
    "StreamRow",
    "StreamSnapshot",
    "SymbolsReply",
    "package_version",
]

PROTOCOL = 1  # ServerFacts.protocol: bumped when a message changes incompatibly
UPDATE_HZ = 10.0  # ticks a second at most, whatever the market does

# WebSocket close codes the server uses (4000-4999 are the application's own).
CLOSE_GOING_AWAY = 1001  # the recorder is stopping
CLOSE_TOO_SLOW = 4001  # the client did not take its messages fast enough

# Bounds of what one message may hold (a client refuses a message beyond them).
MAX_STREAMS = 20_000  # streams in one message; the hub packs 1,024 a connection
MAX_CLOSED = 2_000  # closed candles of one stream in a snapshot (the hub keeps 120)
MAX_CONNECTIONS = 1_000
MAX_EVENTS = 10_000  # events in one message (a snapshot holds the last 200)
MAX_CANDLES = 200_000  # closed candles in one `closed` message
MAX_SPEC = 64  # characters of a stream spec
MAX_TEXT = 1_000  # characters of a message or an error (the event log's own limit)
MAX_PATH = 4_096
MAX_SYMBOLS = 20_000
MAX_ADD = 5_000  # streams one POST /api/v1/streams may add
MAX_ALERTS = 1_000  # alerts of one recorder (config.MAX_ALERTS)
MAX_FIRINGS = 10_000  # firings in one `alert` message


@functools.cache
def package_version() -> str:
    """kline-tui's installed version (ServerFacts.version, /healthz)."""
    try:
        return importlib.metadata.version("kline-tui")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


Spec = Annotated[str, Meta(max_length=MAX_SPEC)]
Text = Annotated[str, Meta(max_length=MAX_TEXT)]
Count = Annotated[int, Meta(ge=0)]

# The dataset's columns after `symbol` (model.CandleRow); FormingRow adds the closed flag.
CandleRow = tuple[int, int, float, float, float, float, float, float, float, float, int]
FormingRow = tuple[int, int, float, float, float, float, float, float, float, float, int, bool]


class ServerFacts(msgspec.Struct, kw_only=True):
    """The recorder process: what it is, where it writes, how it runs."""

    protocol: int = PROTOCOL
    version: Annotated[str, Meta(max_length=100)]
    instance: Annotated[str, Meta(max_length=64)]  # random per service start: events' seq scope
    pid: int
    data_dir: Annotated[str, Meta(max_length=MAX_PATH)]
    demo: Annotated[str, Meta(max_length=100)] | None  # "demo 60x", or None for Binance
    recording: bool  # False while paused
    started: bool  # the pipeline runs (False while starting)
    started_at: float  # wall time the service started
    flush_rows: Count
    flush_age_s: float
    keep_closed: Annotated[int, Meta(ge=0, le=MAX_CLOSED)]  # closed candles kept per stream
    clients: Count  # events sockets open


class StreamRow(msgspec.Struct, kw_only=True):
    """One stream as the watch table shows it (a `StreamState` without its closed candles)."""

    stream: Spec
    status: StreamStatus
    forming: FormingRow | None  # the latest update, forming or closed
    event_time: int | None  # exchange time of the latest event (ms)
    age_s: Annotated[float, Meta(ge=0)] | None  # since the server received it
    updates: Count
    recorded: Count
    duplicates: Count
    gaps: Count
    stalls: Count
    backfill: Count
    implausible: Count
    error: Text | None
    conn_id: int | None


class StreamSnapshot(StreamRow, kw_only=True):
    """A stream with its recent closed candles, oldest first (for sparklines and the chart)."""

    closed: Annotated[list[CandleRow], Meta(max_length=MAX_CLOSED)]


class ConnectionRow(msgspec.Struct, kw_only=True):
    """A `ConnectionStatus`, its monotonic times turned into ages and durations (seconds)."""

    conn_id: int
    market: Market
    state: ConnectionState
    streams: Count
    connected_for_s: float | None
    attempt: Count
    next_attempt_in_s: float | None
    last_error: Text | None
    reconnects: Count
    frames: Count
    malformed: Count
    lag_ms: float | None
    last_frame_age_s: float | None
    retiring: bool
    frames_per_s: Annotated[float, Meta(ge=0)]


class SinkRow(msgspec.Struct, kw_only=True):
    """The sink's `SinkStats`, field for field."""

    rows_buffered: Count
    rows_written: Count
    files_written: Count
    flushes: Count
    last_flush_at: float | None
    last_flush_ms: float | None
    errors: Count
    last_error: Text | None
    failing: bool
    dropped: Count
    dead_letters: Count
    last_dead_letter: Text | None


class EventRow(msgspec.Struct, array_like=True):
    """One event of the recorder's log: `[seq, at, level, message]`; `seq` counts from 1 within
    one `ServerFacts.instance`, so a client that reconnects tells the events it has from new ones.
    """

    seq: int
    at: float
    level: Annotated[int, Meta(ge=0, le=100)]
    message: Text


class ClosedCandle(msgspec.Struct, array_like=True):
    """A closed candle of one stream: `[spec, candle]`."""

    stream: Spec
    candle: CandleRow


AlertId = Annotated[str, Meta(max_length=64)]


class AlertRow(msgspec.Struct, kw_only=True):
    """One alert of the recorder: its `[[alerts]]` table, its id and what it did."""

    id: AlertId
    stream: Spec
    rule: Annotated[str, Meta(max_length=32)]
    value: float
    window: Annotated[int, Meta(ge=1, le=1000)]
    cooldown_s: Annotated[float, Meta(ge=0)]
    muted: bool
    description: Text  # the rule in words
    fired: Count  # since the recorder started
    last_fired_at: int | None  # exchange time (ms)


class FiringRow(msgspec.Struct, kw_only=True):
    """One firing, as the webhook's body has it (README, "Alerts")."""

    id: Text
    alert: AlertId
    stream: Spec
    rule: Annotated[str, Meta(max_length=32)]
    value: float
    price: float | None
    open_time: int
    fired_at: int
    message: Text


# -- the events socket -------------------------------------------------------------------------


class Snapshot(msgspec.Struct, tag="snapshot", tag_field="type", kw_only=True):
    """Everything at once: the first message of the socket, and GET /api/v1/state."""

    server: ServerFacts
    streams: Annotated[list[StreamSnapshot], Meta(max_length=MAX_STREAMS)]
    connections: Annotated[list[ConnectionRow], Meta(max_length=MAX_CONNECTIONS)]
    sink: SinkRow
    events: Annotated[list[EventRow], Meta(max_length=MAX_EVENTS)]  # the latest, oldest first
    alerts: Annotated[list[AlertRow], Meta(max_length=MAX_ALERTS)] = msgspec.field(
        default_factory=list
    )


class Rows(msgspec.Struct, tag="rows", tag_field="type"):
    """The streams that changed since the last tick (coalesced forming updates)."""

    streams: Annotated[list[StreamRow], Meta(max_length=MAX_STREAMS)]


class Closed(msgspec.Struct, tag="closed", tag_field="type"):
    """Candles that closed since the last tick, in the order they closed (never dropped)."""

    candles: Annotated[list[ClosedCandle], Meta(max_length=MAX_CANDLES)]


class Events(msgspec.Struct, tag="events", tag_field="type"):
    """Events logged since the last tick (never dropped)."""

    events: Annotated[list[EventRow], Meta(max_length=MAX_EVENTS)]


class Added(msgspec.Struct, tag="added", tag_field="type"):
    """Streams watched since the last tick, with their closed candles."""

    streams: Annotated[list[StreamSnapshot], Meta(max_length=MAX_STREAMS)]


class Removed(msgspec.Struct, tag="removed", tag_field="type"):
    """Streams no longer watched (what they recorded stays on disk)."""

    streams: Annotated[list[Spec], Meta(max_length=MAX_STREAMS)]


class Recording(msgspec.Struct, tag="recording", tag_field="type"):
    """Recording was paused (False) or resumed (True)."""

    recording: bool


class Status(msgspec.Struct, tag="status", tag_field="type", kw_only=True):
    """About once a second: connections, the sink, the server's facts."""

    server: ServerFacts
    connections: Annotated[list[ConnectionRow], Meta(max_length=MAX_CONNECTIONS)]
    sink: SinkRow


class Alerts(msgspec.Struct, tag="alerts", tag_field="type"):
    """The recorder's alerts, all of them, after one was added, muted, deleted or fired."""

    alerts: Annotated[list[AlertRow], Meta(max_length=MAX_ALERTS)]


class AlertFired(msgspec.Struct, tag="alert", tag_field="type"):
    """Alerts that fired since the last tick, in order (never dropped)."""

    firings: Annotated[list[FiringRow], Meta(max_length=MAX_FIRINGS)]


Message = (
    Snapshot | Rows | Closed | Events | Added | Removed | Recording | Status | Alerts | AlertFired
)


# -- HTTP bodies -------------------------------------------------------------------------------


class AddStreams(msgspec.Struct, forbid_unknown_fields=True):
    """POST /api/v1/streams: `{"streams": ["usdm:BTCUSDT:1m", ...]}`."""

    streams: Annotated[list[Spec], Meta(min_length=1, max_length=MAX_ADD)]


class AddedReply(msgspec.Struct):
    """The streams that were not watched already and now are."""

    added: Annotated[list[Spec], Meta(max_length=MAX_ADD)]


class RemovedReply(msgspec.Struct):
    removed: Annotated[list[Spec], Meta(max_length=MAX_ADD)]


class RecordingReply(msgspec.Struct):
    recording: bool


class FlushReply(msgspec.Struct):
    """Rows written by this flush (0: nothing was buffered, or the disk refused)."""

    written: Count


class SymbolsReply(msgspec.Struct):
    """The market's tradable symbols, sorted."""

    market: Market
    symbols: Annotated[list[Annotated[str, Meta(max_length=40)]], Meta(max_length=MAX_SYMBOLS)]


class AlertsReply(msgspec.Struct):
    """GET /api/v1/alerts."""

    alerts: Annotated[list[AlertRow], Meta(max_length=MAX_ALERTS)]


class AlertReply(msgspec.Struct):
    """The alert added, muted or deleted."""

    alert: AlertRow


class MuteAlert(msgspec.Struct, forbid_unknown_fields=True):
    """POST /api/v1/alerts/{id}/mute: `{"muted": false}` unmutes; an empty body mutes."""

    muted: bool = True


class ErrorReply(msgspec.Struct):
    """Any error: one sentence a person can read."""

    error: Text


class RefusedReply(msgspec.Struct):
    """422: streams the exchange does not list or trade; one sentence each in `problems`."""

    error: Text
    problems: Annotated[list[Text], Meta(max_length=MAX_ADD)]


class Health(msgspec.Struct, kw_only=True):
    """GET /healthz: `status` is ok, starting (both 200), unhealthy or stopping (503); `reasons`
    says why it is not ok, one sentence each."""

    status: str
    reasons: list[str] = msgspec.field(default_factory=list)
    version: str = ""
    uptime_s: float = 0.0
    loop_lag_ms: float = 0.0  # the worst of the last few seconds
    recording: bool = True
    streams: dict[str, int] = msgspec.field(default_factory=dict)  # by status
    clients: int = 0

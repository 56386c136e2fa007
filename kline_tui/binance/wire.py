"""Decoding and encoding of Binance WebSocket frames.

Each frame is decoded once, by msgspec, straight into typed structs: a combined-stream kline event
becomes a `WireKline` (which *is* a `Candle`) without an intermediate dict. Anything that is not a
well-formed kline event, a control reply or a shutdown notice comes back as `Malformed` with a
short reason; nothing here raises on bad input.

`decode` checks only what a frame says of itself. Whether its times can be real (against the
exchange's clock and the stream's interval) is `implausible`'s question, which the connection asks
after decoding: it needs the stream's interval and the clock, and keeping it apart keeps `decode`
as fast as it is. Text a server sends that is kept (error messages, stream names in reasons) is
passed through `safe_text`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec

from kline_tui.model import (
    EARLIEST_OPEN_MS,
    FIXED_MS,
    LATEST_MS,
    WEEK_ORIGIN_MS,
    Candle,
    Interval,
)
from kline_tui.safe_text import safe_text

__all__ = [
    "CLOCK_TOLERANCE_MS",
    "CLOSE_LATENESS_MS",
    "MAX_FRAME_BYTES",
    "ControlReply",
    "Envelope",
    "KlineEvent",
    "Malformed",
    "ShutdownEvent",
    "WireKline",
    "candle_is_sane",
    "decode",
    "encode_control",
    "implausible",
    "implausible_candle",
    "implausible_candle_times",
]

# Binance's kline frames are well under 1 KiB and a LIST_SUBSCRIPTIONS reply for 1,024 streams is
# about 25 KiB; anything far bigger is garbage and is refused before decoding.
MAX_FRAME_BYTES = 256 * 1024

# How far an event time may be from the exchange's clock as the client knows it (the last REST
# server time carried forward): network delay and clock drift are far below it, a bogus frame far
# above.
CLOCK_TOLERANCE_MS = 5 * 60_000
# How long after its close time a candle's final update may claim to have been sent: the exchange
# sends it on the first trade after the close, so a "closed" candle whose close time is well after
# the event time is closed before its time.
CLOSE_LATENESS_MS = 1000
_WEEK_MS = FIXED_MS[Interval.W1]  # weeks are aligned to Mondays, not to the epoch


def candle_is_sane(c: Candle) -> bool:
    """Whether a candle's numbers can be real: finite, non-negative, low <= open/close <= high,
    and a close time after the open time."""
    lo, hi = c.low, c.high
    v, q, tv, tq = c.volume, c.quote_volume, c.taker_buy_volume, c.taker_buy_quote_volume
    # NaN fails every comparison, and a sum of non-negative numbers is finite only if each is.
    return (
        0.0 <= lo <= c.open <= hi
        and lo <= c.close <= hi
        and v >= 0.0
        and q >= 0.0
        and tv >= 0.0
        and tq >= 0.0
        and hi + v + q + tv + tq < math.inf
        and c.trades >= 0
        and c.close_time > c.open_time
    )


class WireKline(Candle, gc=False, rename={"symbol": "s", "interval": "i", "closed": "x"}):
    """The `k` object of a kline event: a Candle (with Binance's field names) plus the symbol,
    the interval and the `x` flag, decoded straight from the frame."""

    symbol: str
    interval: str
    closed: bool

    # Whether the numbers can be a real candle: see candle_is_sane (bound here, not wrapped, so
    # the hot path pays no extra call).
    is_sane = candle_is_sane

    def to_candle(self) -> Candle:
        """A plain Candle with the same values (what the sink stores)."""
        return Candle(*self.as_row())


class KlineEvent(msgspec.Struct, tag_field="e", tag="kline", gc=False):
    """A kline event: `E` is the exchange's event time (ms)."""

    E: int
    s: str
    k: WireKline


class ShutdownEvent(msgspec.Struct, tag_field="e", tag="serverShutdown", gc=False):
    """The server announces it will close this connection soon: reconnect early."""

    E: int


class Envelope(msgspec.Struct, gc=False):
    """A combined-stream frame: `{"stream": name, "data": event}`."""

    stream: str
    data: KlineEvent | ShutdownEvent


@dataclass(frozen=True, slots=True)
class ControlReply:
    """The answer to a SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / property request."""

    id: int | None
    result: Any = None
    error_code: int | None = None
    error_msg: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the request succeeded."""
        return self.error_code is None


@dataclass(frozen=True, slots=True)
class Malformed:
    """A frame that is none of the above; `reason` says what was wrong with it."""

    reason: str


_envelope = msgspec.json.Decoder(Envelope, strict=False)
_any = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def decode(frame: str | bytes) -> Envelope | ControlReply | Malformed:
    """Decode one frame received on a combined-stream connection."""
    if type(frame) is not str and not isinstance(frame, str):
        # Binance sends only text frames; a binary frame arrives as bytes.
        return Malformed("binary frame")
    if len(frame) > MAX_FRAME_BYTES:
        return Malformed(f"oversized frame ({len(frame)} bytes)")
    try:
        envelope = _envelope.decode(frame)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return _decode_other(frame)
    data = envelope.data
    if type(data) is KlineEvent and not data.k.is_sane():
        return Malformed(f"impossible kline values on {safe_text(envelope.stream, 60)}")
    return envelope


def _decode_other(frame: str) -> ControlReply | Malformed:
    try:
        obj = _any.decode(frame)
    except msgspec.DecodeError:
        return Malformed("not JSON")
    if not isinstance(obj, dict):
        return Malformed(f"unexpected JSON {type(obj).__name__}")
    if "stream" in obj:
        return Malformed(f"bad event on stream {safe_text(obj.get('stream'), 60)!r}")
    req_id = obj.get("id")
    if req_id is not None and not isinstance(req_id, int):
        return Malformed("control reply with a non-integer id")
    if "result" in obj:
        return ControlReply(req_id, result=obj["result"])
    error = obj["error"] if isinstance(obj.get("error"), dict) else obj
    if "code" in error and "msg" in error:
        return ControlReply(
            req_id, error_code=_as_int(error["code"]), error_msg=safe_text(error["msg"])
        )
    return Malformed("unexpected object")


def implausible(
    k: WireKline, event_time: int, interval: Interval, exchange_now_ms: int | None
) -> str | None:
    """Why a decoded kline cannot be real, or None if it can: the check the connection makes after
    `decode`, with its stream's interval and the exchange's clock (None when not known yet).

    Impossible: an event time more than CLOCK_TOLERANCE_MS from the exchange's clock, or after
    2100; an open time before 2017, after the event time, or not aligned to the interval; a close
    time other than the interval's; a closed candle whose close time is more than
    CLOSE_LATENESS_MS after the event time. A handful of int comparisons: it runs on every frame.
    """
    t = k.open_time
    if exchange_now_ms is not None and not (
        -CLOCK_TOLERANCE_MS <= event_time - exchange_now_ms <= CLOCK_TOLERANCE_MS
    ):
        return f"event time {(event_time - exchange_now_ms) // 1000:+d} s from the exchange clock"
    if event_time >= LATEST_MS:
        return "event time after 2100"
    if t > event_time:
        return "open time after the event time"
    if k.closed and k.close_time > event_time + CLOSE_LATENESS_MS:
        return "closed before its close time"
    step = FIXED_MS.get(interval)
    # Every interval but the month, inline: one modulo and one sum, no further call.
    if (
        step is not None
        and t >= EARLIEST_OPEN_MS
        and not (t - (WEEK_ORIGIN_MS if step == _WEEK_MS else 0)) % step
        and k.close_time == t + step - 1
    ):
        return None
    return implausible_candle_times(t, k.close_time, interval)


def implausible_candle_times(open_time: int, close_time: int, interval: Interval) -> str | None:
    """Why these can't be a candle's open and close times for `interval`, or None if they can."""
    if open_time < EARLIEST_OPEN_MS:
        return "open time before 2017"
    if not interval.is_aligned(open_time):
        return "open time not aligned to the interval"
    if close_time != interval.close_time(open_time):
        return "close time not the interval's"
    return None


def implausible_candle(c: Candle, interval: Interval) -> str | None:
    """Why a candle (from REST, or any source without an event time) cannot be a real candle of
    `interval`, or None if it can: its numbers (`candle_is_sane`) and its times."""
    if not candle_is_sane(c):
        return "impossible values"
    return implausible_candle_times(c.open_time, c.close_time, interval)


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def encode_control(method: str, request_id: int, params: list[str] | None = None) -> bytes:
    """A control message, e.g. `{"method":"SUBSCRIBE","params":[...],"id":1}`."""
    msg: dict[str, Any] = {"method": method}
    if params is not None:
        msg["params"] = params
    msg["id"] = request_id
    return _encoder.encode(msg)

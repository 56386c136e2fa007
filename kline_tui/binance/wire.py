"""Decoding and encoding of Binance WebSocket frames.

Each frame is decoded once, by msgspec, straight into typed structs: a combined-stream kline event
becomes a `WireKline` (which *is* a `Candle`) without an intermediate dict. Anything that is not a
well-formed kline event, a control reply or a shutdown notice comes back as `Malformed` with a
short reason; nothing here raises on bad input.

Besides trade klines (`kline`), the frames of the other kinds are decoded into the same
`WireKline` (docs/binance-kline-kinds.md, 1a): `continuous_kline` (keyed by `ps`, `ct` and `k.i`;
its `k` has no `s`), `markPrice_kline` (keyed by `k.s`) and `indexPrice_kline` (keyed by `ps`; its
`k.s` is "0"). Each kind has its own rule of what values can be real (`kind_is_sane`).

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
    Kind,
)
from kline_tui.safe_text import safe_text

__all__ = [
    "CLOCK_TOLERANCE_MS",
    "CLOSE_LATENESS_MS",
    "DEFAULT_PREMIUM_BOUND",
    "MAX_FRAME_BYTES",
    "MAX_TRADES",
    "ContinuousKlineEvent",
    "ControlReply",
    "Envelope",
    "IndexPriceKlineEvent",
    "KindEvent",
    "KlineEvent",
    "Malformed",
    "MarkPriceKlineEvent",
    "ShutdownEvent",
    "WireKline",
    "candle_is_sane",
    "decode",
    "encode_control",
    "implausible",
    "implausible_candle",
    "implausible_candle_times",
    "kind_is_sane",
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


# The largest trade count a candle may hold: the dataset's Int64 column. JSON integers have no
# size (msgspec decodes 10**30 as a Python int), so a count past it is an impossible candle,
# refused here, not a row the sink cannot write.
MAX_TRADES = 2**63 - 1


def candle_is_sane(c: Candle) -> bool:
    """Whether a candle's numbers can be real: finite, non-negative, low <= open/close <= high,
    a trade count the dataset can hold, and a close time after the open time."""
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
        and 0 <= c.trades <= MAX_TRADES
        and c.close_time > c.open_time
    )


# The largest |premium index| believed (a fraction: 0.05 is 5 %). Binance documents no range; the
# examples are around -0.0005 (docs/binance-kline-kinds.md, 2). The config's `premium_bound`.
DEFAULT_PREMIUM_BOUND = 0.05


def _no_volume(c: Candle) -> bool:
    """Whether the four volume fields are exactly zero: Binance sends "0" (documented "Ignore")
    for mark, index and premium klines, and anything else is not the frame we think it is."""
    return (
        c.volume == 0.0
        and c.quote_volume == 0.0
        and c.taker_buy_volume == 0.0
        and c.taker_buy_quote_volume == 0.0
    )


def kind_is_sane(c: Candle, kind: Kind, premium_bound: float = DEFAULT_PREMIUM_BOUND) -> bool:
    """Whether a candle's numbers can be real for its kind.

    Trade and continuous klines: `candle_is_sane`. Mark and index klines: positive finite prices,
    low <= open/close <= high, and the volume fields zero. Premium klines: finite, the same
    order, |value| <= `premium_bound` (positive values are fine: Binance states no sign), and the
    volume fields zero. The count (`n`, "number of basic data") is from 0 to MAX_TRADES.
    """
    if kind is Kind.TRADE or kind.is_continuous:
        return candle_is_sane(c)
    lo, hi = c.low, c.high
    if kind is Kind.PREMIUM:
        # NaN fails every comparison; the bound makes an infinity fail too.
        values_ok = -premium_bound <= lo and hi <= premium_bound
    else:
        values_ok = lo > 0.0 and hi < math.inf
    return (
        values_ok
        and lo <= c.open <= hi
        and lo <= c.close <= hi
        and _no_volume(c)
        and 0 <= c.trades <= MAX_TRADES
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


class _ContinuousK(Candle, gc=False, rename={"interval": "i", "closed": "x"}):
    """The `k` object of a continuous contract kline: no `s` (the series is `ps` and `ct`)."""

    interval: str
    closed: bool


_CONTRACT_KINDS = {k.contract_type: k for k in Kind if k.contract_type is not None}


class ContinuousKlineEvent(msgspec.Struct, tag_field="e", tag="continuous_kline", gc=False):
    """A continuous contract kline event: `ps` the pair, `ct` the contract type (upper case)."""

    E: int
    ps: str
    ct: str
    k: _ContinuousK

    def series(self) -> tuple[WireKline, str, Kind | None]:
        """The kline (its `symbol` set to the pair), the pair, and the kind `ct` names (None for
        a contract type kline-tui does not know)."""
        k = self.k
        kline = WireKline(*k.as_row(), self.ps, k.interval, k.closed)
        return kline, self.ps, _CONTRACT_KINDS.get(self.ct)


class MarkPriceKlineEvent(msgspec.Struct, tag_field="e", tag="markPrice_kline", gc=False):
    """A COIN-M mark price kline event: `k.s` is the symbol, `ps` its pair."""

    E: int
    ps: str
    k: WireKline

    def series(self) -> tuple[WireKline, str, Kind | None]:
        """The kline, the symbol that keys it, and its kind."""
        return self.k, self.k.symbol, Kind.MARK


class IndexPriceKlineEvent(msgspec.Struct, tag_field="e", tag="indexPrice_kline", gc=False):
    """A COIN-M index price kline event: keyed by `ps` (the pair); `k.s` is "0"."""

    E: int
    ps: str
    k: WireKline

    def series(self) -> tuple[WireKline, str, Kind | None]:
        """The kline (its `symbol` set to the pair), the pair, and its kind."""
        kline = msgspec.structs.replace(self.k, symbol=self.ps)
        return kline, self.ps, Kind.INDEX


# The events of kinds other than trade: `series()` gives each one's kline, key and kind.
KindEvent = ContinuousKlineEvent | MarkPriceKlineEvent | IndexPriceKlineEvent
_KIND_EVENTS = (ContinuousKlineEvent, MarkPriceKlineEvent, IndexPriceKlineEvent)


class ShutdownEvent(msgspec.Struct, tag_field="e", tag="serverShutdown", gc=False):
    """The server announces it will close this connection soon: reconnect early."""

    E: int


class Envelope(msgspec.Struct, gc=False):
    """A combined-stream frame: `{"stream": name, "data": event}`."""

    stream: str
    data: (
        KlineEvent
        | ContinuousKlineEvent
        | MarkPriceKlineEvent
        | IndexPriceKlineEvent
        | ShutdownEvent
    )


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
    if type(data) is KlineEvent:
        if not data.k.is_sane():
            return Malformed(f"impossible kline values on {safe_text(envelope.stream, 60)}")
    elif isinstance(data, _KIND_EVENTS):
        kind = data.series()[2]
        if kind is None:
            return Malformed(f"unknown contract type on {safe_text(envelope.stream, 60)}")
        if not kind_is_sane(data.k, kind):
            return Malformed(f"impossible {kind} kline values on {safe_text(envelope.stream, 60)}")
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
    if open_time >= LATEST_MS:
        return "open time after 2100"
    if not interval.is_aligned(open_time):
        return "open time not aligned to the interval"
    if close_time != interval.close_time(open_time):
        return "close time not the interval's"
    return None


def implausible_candle(
    c: Candle,
    interval: Interval,
    kind: Kind = Kind.TRADE,
    premium_bound: float = DEFAULT_PREMIUM_BOUND,
) -> str | None:
    """Why a candle (from REST, or any source without an event time) cannot be a real candle of
    `interval` and `kind`, or None if it can: its numbers (`kind_is_sane`) and its times."""
    if not kind_is_sane(c, kind, premium_bound):
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

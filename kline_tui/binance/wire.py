"""Decoding and encoding of Binance WebSocket frames.

Each frame is decoded once, by msgspec, straight into typed structs: a combined-stream kline event
becomes a `WireKline` (which *is* a `Candle`) without an intermediate dict. Anything that is not a
well-formed kline event, a control reply or a shutdown notice comes back as `Malformed` with a
short reason; nothing here raises on bad input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec

from kline_tui.model import Candle

__all__ = [
    "WireKline",
    "KlineEvent",
    "ShutdownEvent",
    "Envelope",
    "ControlReply",
    "Malformed",
    "decode",
    "encode_control",
    "MAX_FRAME_BYTES",
]

# Binance's kline frames are well under 1 KiB and a LIST_SUBSCRIPTIONS reply for 1,024 streams is
# about 25 KiB; anything far bigger is garbage and is refused before decoding.
MAX_FRAME_BYTES = 256 * 1024


class WireKline(
    msgspec.Struct,
    gc=False,
    rename={
        "open_time": "t",
        "close_time": "T",
        "open": "o",
        "high": "h",
        "low": "l",
        "close": "c",
        "volume": "v",
        "quote_volume": "q",
        "taker_buy_volume": "V",
        "taker_buy_quote_volume": "Q",
        "trades": "n",
        "symbol": "s",
        "interval": "i",
        "closed": "x",
    },
):
    """The `k` object of a kline event: a Candle's fields plus the symbol, interval and `x` flag.

    It has Candle's attributes and `as_row`, so the pipeline uses it wherever a Candle goes.
    """

    open_time: int
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    taker_buy_volume: float
    taker_buy_quote_volume: float
    trades: int
    symbol: str
    interval: str
    closed: bool

    as_row = Candle.as_row

    def is_sane(self) -> bool:
        """Whether the numbers can be a real candle (finite, non-negative, low <= open/close <= high)."""
        lo, hi = self.low, self.high
        v, q, tv, tq = self.volume, self.quote_volume, self.taker_buy_volume, self.taker_buy_quote_volume
        # NaN fails every comparison, and a sum of non-negative numbers is finite only if each is.
        return (
            0.0 <= lo <= self.open <= hi
            and lo <= self.close <= hi
            and v >= 0.0 and q >= 0.0 and tv >= 0.0 and tq >= 0.0
            and hi + v + q + tv + tq < math.inf
            and self.trades >= 0
            and self.close_time > self.open_time
        )

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
        return Malformed(f"impossible kline values on {envelope.stream}")
    return envelope


def _decode_other(frame: str) -> ControlReply | Malformed:
    try:
        obj = _any.decode(frame)
    except msgspec.DecodeError:
        return Malformed("not JSON")
    if not isinstance(obj, dict):
        return Malformed(f"unexpected JSON {type(obj).__name__}")
    if "stream" in obj:
        return Malformed(f"bad event on stream {str(obj.get('stream'))[:60]!r}")
    req_id = obj.get("id")
    if req_id is not None and not isinstance(req_id, int):
        return Malformed("control reply with a non-integer id")
    if "result" in obj:
        return ControlReply(req_id, result=obj["result"])
    error = obj.get("error") if isinstance(obj.get("error"), dict) else obj
    if "code" in error and "msg" in error:
        return ControlReply(req_id, error_code=_as_int(error["code"]), error_msg=str(error["msg"]))
    return Malformed("unexpected object")


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

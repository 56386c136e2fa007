"""Decoding frames: kline events, control replies, and everything malformed."""

import calendar

import msgspec
import pytest

from kline_tui.binance import wire
from kline_tui.model import Interval

EVENT = (
    '{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1719765539838,"s":"BTCUSDT","k":{'
    '"t":1719765480000,"T":1719765539999,"s":"BTCUSDT","i":"1m","f":5122041311,"L":5122041720,'
    '"o":"61607.90","c":"61623.30","h":"61623.30","l":"61605.30","v":"16.692","n":410,'
    '"x":false,"q":"1028411.77850","V":"8.100","Q":"499003.12000","B":"0"}}}'
)


def test_kline_event_decodes_to_numbers():
    msg = wire.decode(EVENT)
    assert isinstance(msg, wire.Envelope)
    k = msg.data.k
    assert msg.stream == "btcusdt@kline_1m" and msg.data.E == 1719765539838
    assert (k.open_time, k.close_time, k.symbol, k.interval, k.closed) == (
        1719765480000,
        1719765539999,
        "BTCUSDT",
        "1m",
        False,
    )
    assert (k.open, k.high, k.low, k.close) == (61607.90, 61623.30, 61605.30, 61623.30)
    assert (k.volume, k.quote_volume, k.taker_buy_volume, k.taker_buy_quote_volume, k.trades) == (
        16.692,
        1028411.7785,
        8.1,
        499003.12,
        410,
    )


def test_control_replies():
    assert wire.decode('{"result":null,"id":1}') == wire.ControlReply(1, None)
    assert wire.decode('{"result":["btcusdt@kline_1m"],"id":3}').result == ["btcusdt@kline_1m"]
    err = wire.decode('{"code":2,"msg":"Invalid request: unknown variant","id":4}')
    assert (err.ok, err.error_code, err.id) == (False, 2, 4)
    nested = wire.decode('{"error":{"code":3,"msg":"Invalid JSON"},"id":null}')
    assert nested.error_code == 3


def test_server_shutdown():
    msg = wire.decode('{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":5}}')
    assert isinstance(msg.data, wire.ShutdownEvent)


@pytest.mark.parametrize(
    "frame",
    [
        "not json at all",
        b'{"binary": true}',
        "x" * (wire.MAX_FRAME_BYTES + 1),
        "[1,2,3]",
        EVENT.replace('"t":1719765480000', '"t":"abc"'),
        EVENT.replace('"k":{', '"k":[],"z":{'),
        EVENT.replace('"o":"61607.90",', ""),
        EVENT.replace('"o":"61607.90"', '"o":"nan"'),
        EVENT.replace('"l":"61605.30"', '"l":"-5"'),
        EVENT.replace('"h":"61623.30"', '"h":"1.0"'),
        EVENT.replace('"e":"kline"', '"e":"trade"'),
        EVENT.replace('"x":false', '"x":"maybe"'),
        '{"stream":"btcusdt@kline_1m"}',
        '{"id":"seven","result":null}',
        "{}",
    ],
)
def test_malformed_frames_never_raise(frame):
    assert isinstance(wire.decode(frame), wire.Malformed)


def test_encode_control():
    raw = wire.encode_control("SUBSCRIBE", 7, ["btcusdt@kline_1m"])
    assert msgspec.json.decode(raw) == {
        "method": "SUBSCRIBE",
        "params": ["btcusdt@kline_1m"],
        "id": 7,
    }


# -- what the connection keeps: decode, then `implausible` with the stream's interval and clock --

MIN = 60_000


def kline_frame(
    t, *, T=None, E=None, x=False, i="1m", interval=Interval.M1, stream="btcusdt@kline_1m"
):
    T = interval.close_time(t) if T is None else T
    E = t + 30_000 if E is None else E
    return msgspec.json.encode(
        {
            "stream": stream,
            "data": {
                "e": "kline",
                "E": E,
                "s": "BTCUSDT",
                "k": {
                    "t": t,
                    "T": T,
                    "s": "BTCUSDT",
                    "i": i,
                    "f": 1,
                    "L": 2,
                    "o": "10.0",
                    "c": "10.5",
                    "h": "11.0",
                    "l": "9.5",
                    "v": "1.0",
                    "n": 3,
                    "x": x,
                    "q": "10.0",
                    "V": "0.5",
                    "Q": "5.0",
                    "B": "0",
                },
            },
        }
    ).decode()


def kept(frame, interval=Interval.M1, clock_ms=None):
    """The candle the connection keeps of a frame, or the reason it is refused."""
    msg = wire.decode(frame)
    if not isinstance(msg, wire.Envelope):
        return msg.reason
    reason = wire.implausible(msg.data.k, msg.data.E, interval, clock_ms)
    return reason if reason is not None else msg.data.k


T0 = 1_764_028_800_000  # 2025-11-25 00:00 UTC, a Tuesday


def test_plausible_candles_are_kept():
    for t, E, x in [(T0, T0 + 1, False), (T0, T0 + MIN + 5, True), (T0, T0 + 3_600_000, True)]:
        assert isinstance(kept(kline_frame(t, E=E, x=x), clock_ms=E - 2000), wire.WireKline)
    # A closed candle's final update may be stamped just before its close time.
    assert isinstance(kept(kline_frame(T0, E=T0 + MIN - 500, x=True)), wire.WireKline)
    month = calendar.timegm((2026, 2, 1, 0, 0, 0)) * 1000
    frame = kline_frame(month, i="1M", interval=Interval.MO1, E=month + 5)
    assert isinstance(kept(frame, Interval.MO1), wire.WireKline)
    monday = calendar.timegm((2026, 11, 23, 0, 0, 0)) * 1000
    frame = kline_frame(monday, i="1w", interval=Interval.W1, E=monday + 5)
    assert isinstance(kept(frame, Interval.W1), wire.WireKline)


@pytest.mark.parametrize(
    "frame, interval, clock_ms, words",
    [
        (kline_frame(T0 + 1234, T=T0 + 1234 + MIN - 1), Interval.M1, None, "not aligned"),
        (kline_frame(T0 + MIN, E=T0 + MIN + 1), Interval.M5, None, "not aligned"),
        (kline_frame(10**16, E=10**16 + 1), Interval.M1, None, "after 2100"),
        (kline_frame(10**16, E=10**16 + 1), Interval.M1, T0, "from the exchange clock"),
        (kline_frame(T0 + 10 * MIN, E=T0 + 10 * MIN), Interval.M1, T0, "from the exchange clock"),
        (kline_frame(T0 - 10 * MIN, E=T0 - 10 * MIN), Interval.M1, T0, "from the exchange clock"),
        (kline_frame(MIN, E=2 * MIN), Interval.M1, None, "before 2017"),
        (kline_frame(T0 + 5 * MIN, E=T0), Interval.M1, None, "after the event time"),
        (kline_frame(T0, E=T0 + 30_000, x=True), Interval.M1, None, "closed before its close time"),
        (kline_frame(T0, T=T0 + 2 * MIN - 1), Interval.M1, None, "close time"),
        (
            kline_frame(
                calendar.timegm((2026, 2, 1, 0, 0, 0)) * 1000,
                T=calendar.timegm((2026, 3, 1, 0, 0, 0)) * 1000,
                i="1M",
                interval=Interval.MO1,
            ),
            Interval.MO1,
            None,
            "close time",
        ),
        (kline_frame(T0, i="1w", interval=Interval.W1), Interval.W1, None, "not aligned"),
    ],
)
def test_impossible_candles_are_refused(frame, interval, clock_ms, words):
    reason = kept(frame, interval, clock_ms)
    assert isinstance(reason, str) and words in reason


@pytest.mark.parametrize("count", [2**63, 10**30 + 707])
def test_a_trade_count_no_dataset_column_holds_is_refused(count):
    """msgspec decodes a JSON integer of any size: a closed candle with `n` past Int64 would reach
    the sink, fail its write and leave a hole where the candle was taken as held."""
    frame = kline_frame(T0, E=T0 + MIN + 5, x=True).replace('"n":3', f'"n":{count}')
    assert "impossible kline values" in kept(frame)
    at_limit = frame.replace(f'"n":{count}', f'"n":{wire.MAX_TRADES}')
    assert isinstance(kept(at_limit), wire.WireKline)


def test_text_from_servers_loses_control_characters():
    err = wire.decode(
        '{"code":2,"msg":"bad\\u001b[2J\\u001b]0;pwned\\u0007 request\\u202e","id":4}'
    )
    assert err.error_msg == "bad request"
    frame = kline_frame(T0, stream="\u001b[2J\u001b]0;x\u0007btc").replace('"o":"10.0"', '"o":"-1"')
    reason = wire.decode(frame).reason
    assert "\x1b" not in reason and "\x07" not in reason and "btc" in reason
    bad = wire.decode('{"stream":"\\u001b[31mred","data":7}').reason
    assert "\x1b" not in bad and "red" in bad

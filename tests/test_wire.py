"""Decoding frames: kline events, control replies, and everything malformed."""

import msgspec
import pytest

from kline_tui.binance import wire

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
        1719765480000, 1719765539999, "BTCUSDT", "1m", False)
    assert (k.open, k.high, k.low, k.close) == (61607.90, 61623.30, 61605.30, 61623.30)
    assert (k.volume, k.quote_volume, k.taker_buy_volume, k.taker_buy_quote_volume, k.trades) == (
        16.692, 1028411.7785, 8.1, 499003.12, 410)


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
    assert msgspec.json.decode(raw) == {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 7}

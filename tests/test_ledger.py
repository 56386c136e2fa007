"""The ledger's bookkeeping: each candle once, every hole noticed, nothing fetched forever."""

from kline_tui.model import Candle, StreamKey
from kline_tui.recorder.events import EventLog
from kline_tui.recorder.ledger import Ledger

KEY = StreamKey.parse("usdm:BTCUSDT:1m")
M = 60_000
T0 = 1_764_028_800_000


def c(i):
    t = T0 + i * M
    return Candle(t, t + M - 1, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0)


def ledger(history=0):
    stored = []
    def store(key, candle, source):
        stored.append((candle.open_time, source))
        return True

    led = Ledger(store, EventLog(), history=history)
    return led, stored


def missing(led):
    return [((r.first - T0) // M, (r.last - T0) // M) for r in led.streams[KEY].missing]


def test_in_order_and_duplicates():
    led, stored = ledger()
    assert [led.accept(KEY, c(i)) for i in (0, 1, 1, 2, 0)] == [True, True, False, True, False]
    assert [t for t, _ in stored] == [T0, T0 + M, T0 + 2 * M]
    assert led.streams[KEY].duplicates == 2


def test_skip_ahead_opens_a_gap_and_late_close_fills_it():
    led, stored = ledger()
    led.accept(KEY, c(0))
    led.accept(KEY, c(4))
    assert missing(led) == [(1, 3)]
    assert led.accept(KEY, c(2))  # a late close
    assert missing(led) == [(1, 1), (3, 3)]
    assert not led.accept(KEY, c(2))
    n = led.fill(KEY, T0 + M, T0 + 3 * M, [c(1), c(2), c(3)], server_now=T0 + 10 * M)
    assert n == 2 and missing(led) == []
    assert sorted(t for t, _ in stored) == [T0 + i * M for i in range(5)]
    assert [s for t, s in stored if t in (T0 + M, T0 + 3 * M)] == ["rest", "rest"]


def test_forming_update_reveals_a_lost_final_and_a_reconnect_window():
    led, _ = ledger()
    led.accept(KEY, c(0))
    led.observe(KEY, c(1).open_time)  # forming 1: nothing missing
    assert missing(led) == []
    led.observe(KEY, c(2).open_time)  # forming 2 without a close of 1
    assert missing(led) == [(1, 1)]
    led.observe(KEY, c(7).open_time)  # first update after a reconnect
    assert missing(led) == [(1, 1), (2, 6)]
    assert led.accept(KEY, c(7)) and missing(led) == [(1, 1), (2, 6)]


def test_new_stream_fetches_history_before_the_first_candle():
    led, _ = ledger(history=5)
    led.observe(KEY, c(10).open_time)
    assert missing(led) == [(5, 9)]
    assert led.streams[KEY].gaps == 0


def test_restart_resumes_from_the_last_stored_candle():
    led, _ = ledger(history=1000)
    led.begin(KEY, c(3).open_time)
    led.observe(KEY, c(6).open_time)
    assert missing(led) == [(4, 5)]


def test_candles_the_exchange_lacks_are_given_up_once_closed():
    led, _ = ledger()
    led.accept(KEY, c(0))
    led.accept(KEY, c(5))
    # REST has 2 and 3 only; 1 and 4 are absent at the exchange.
    led.fill(KEY, T0 + M, T0 + 4 * M, [c(2), c(3)], server_now=T0 + 6 * M)
    assert missing(led) == [] and led.streams[KEY].absent == 2
    # ...but a candle not yet closed at the exchange's time is not given up.
    led.accept(KEY, c(8))
    led.fill(KEY, T0 + 6 * M, T0 + 7 * M, [], server_now=T0 + 7 * M)
    assert missing(led) == [(7, 7)]


def test_a_candle_not_taken_is_missing_again():
    stored = []
    taking = [True]

    def store(key, candle, source):
        if taking[0]:
            stored.append(candle.open_time)
        return taking[0]

    led = Ledger(store, EventLog(), history=0)
    led.accept(KEY, c(0))
    taking[0] = False  # recording paused
    for i in (1, 2, 3):
        assert led.accept(KEY, c(i))
    assert missing(led) == [(1, 3)]
    taking[0] = True
    assert led.fill(KEY, T0 + M, T0 + 3 * M, [c(1), c(2), c(3)], server_now=T0 + 10 * M) == 3
    assert missing(led) == [] and stored == [T0 + i * M for i in range(4)]

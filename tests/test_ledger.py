"""The ledger's bookkeeping: each candle once, every hole noticed, nothing fetched forever."""

import calendar

import pytest

from kline_tui.model import Candle, Interval, StreamKey
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


def gated_ledger(taking: list[bool]):
    """A ledger whose outlet takes candles while `taking[0]` (recording paused, a full buffer:
    False), and the open times it took."""
    stored = []

    def store(key, candle, source):
        if taking[0]:
            stored.append(candle.open_time)
        return taking[0]

    return Ledger(store, EventLog(), history=0), stored


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


def test_fetched_candles_the_outlet_refuses_stay_missing_and_are_not_given_up():
    """A fill whose rows the outlet does not take (recording paused, a full buffer): they exist
    at the exchange, so they are missing again, not counted absent with those it lacks."""
    taking = [True]
    led, _ = gated_ledger(taking)
    led.accept(KEY, c(0))
    led.accept(KEY, c(6))
    assert missing(led) == [(1, 5)]
    taking[0] = False
    # The exchange has 1, 2, 4 and 5, not 3.
    stored = led.fill(KEY, T0 + M, T0 + 5 * M, [c(1), c(2), c(4), c(5)], T0 + 10 * M)
    assert stored == 0 and missing(led) == [(1, 2), (4, 5)]
    assert led.streams[KEY].absent == 1
    taking[0] = True
    assert led.fill(KEY, T0 + M, T0 + 5 * M, [c(1), c(2), c(4), c(5)], T0 + 10 * M) == 4
    assert missing(led) == [] and led.streams[KEY].absent == 1


def test_a_failing_listener_of_fetched_candles_cuts_no_bookkeeping_short(caplog):
    refused = {T0 + 2 * M}
    led = Ledger(lambda key, candle, source: candle.open_time not in refused, EventLog(), history=0)
    told = []

    def listener(key, candle, server_now):
        told.append(candle.open_time)
        raise RuntimeError("a bug in a listener")

    led.fetched_listeners.append(listener)
    led.accept(KEY, c(0))
    led.accept(KEY, c(5))
    stored = led.fill(KEY, T0 + M, T0 + 4 * M, [c(1), c(2), c(3)], T0 + 10 * M)
    assert stored == 2 and told == [T0 + M]  # told once, then left alone for this fill
    assert missing(led) == [(2, 2)]  # the refused one, held back after the listener failed
    assert led.streams[KEY].absent == 1  # 4: the exchange lacks it
    assert "a listener of fetched candles failed" in caplog.text


def test_a_refused_close_delivered_twice_is_new_once():
    """Recording paused (or a full buffer): a close the outlet refused, delivered again by a
    replaced connection's overlap, is not new a second time (the hub would show it twice)."""
    taking = [False]
    led, stored = gated_ledger(taking)
    led.accept(KEY, c(0))
    assert led.accept(KEY, c(1)) and not led.accept(KEY, c(1))
    assert missing(led) == [(0, 1)]
    taking[0] = True
    assert not led.accept(KEY, c(1))  # taken now, but it was shown already
    assert stored == [T0 + M] and missing(led) == [(0, 0)]
    assert led.accept(KEY, c(2)) and stored == [T0 + M, T0 + 2 * M]


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
    taking = [True]
    led, stored = gated_ledger(taking)
    led.accept(KEY, c(0))
    taking[0] = False  # recording paused
    for i in (1, 2, 3):
        assert led.accept(KEY, c(i))
    assert missing(led) == [(1, 3)]
    taking[0] = True
    assert led.fill(KEY, T0 + M, T0 + 3 * M, [c(1), c(2), c(3)], server_now=T0 + 10 * M) == 3
    assert missing(led) == [] and stored == [T0 + i * M for i in range(4)]


# -- nothing a server or a config can send makes the ledger raise or fetch the impossible --------

JAN_2017 = 1_483_228_800_000  # 2017-01-01 00:00 UTC: nothing on Binance opens before it


def month_ms(year, month):
    return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000


def one_stream(spec, history):
    led, _ = ledger(history)
    return led, StreamKey.parse(spec)


@pytest.mark.parametrize("history", [200, 30_000, 10**6])
def test_month_history_reaches_back_to_2017_at_most(history):
    led, key = one_stream("usdm:BTCUSDT:1M", history)
    led.observe(key, month_ms(2026, 11))  # history = 30,000 raised "year 0 is out of range"
    [r] = led.streams[key].missing
    assert (r.first, r.last) == (JAN_2017, month_ms(2026, 10))
    assert led.streams[key].missing_count() == 118


@pytest.mark.parametrize("interval", [iv.value for iv in Interval])
def test_any_history_for_any_interval_stays_after_2017(interval):
    market = "spot" if interval == "1s" else "usdm"
    led, key = one_stream(f"{market}:BTCUSDT:{interval}", 10**6)
    first_seen = key.interval.open_time_at(T0)
    led.observe(key, first_seen)
    st = led.streams[key]
    [r] = st.missing
    iv = key.interval
    assert r.first >= JAN_2017 and iv.is_aligned(r.first) and r.last == iv.prev_open(first_seen)
    count = st.missing_count()
    assert count == iv.count_between(r.first, r.last) <= 10**6
    # The exchange has none of them: all are given up in one step, not one by one.
    led.fill(key, r.first, r.last, [], server_now=T0 + 10 * M)
    assert st.missing == [] and st.absent == count
    # Exactly the history asked, or all since 2017 when that is less.
    assert r.first == max(iv.shift(first_seen, -(10**6)), iv.open_at_or_after(JAN_2017))


def test_an_impossible_open_time_opens_no_gap():
    led, stored = ledger()
    led.accept(KEY, c(0))
    year_2090 = T0 + 65 * 365 * 24 * 60 * M
    assert not led.accept(
        KEY, Candle(year_2090, year_2090 + M - 1, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0)
    )
    led.observe(KEY, 10**16)  # far past 2100
    led.observe(KEY, T0 + 5 * M + 7)  # not aligned to the minute
    led.observe(KEY, T0 + 11 * 366 * 24 * 60 * M)  # more than ten years after the last held
    st = led.streams[KEY]
    assert missing(led) == [] and st.last == T0 and st.implausible == 4
    assert [t for t, _ in stored] == [T0]
    assert led.accept(KEY, c(1)) and missing(led) == []  # the real stream goes on
    assert sum("ignored a candle" in e.message for e in led.events.recent) == 1  # told once


def test_an_open_time_past_the_exchange_clock_is_ignored():
    stored = []
    led = Ledger(
        lambda k, cd, s: stored.append(cd) or True,
        EventLog(),
        history=0,
        exchange_now_ms=lambda market: T0 + 10 * M,
    )
    led.accept(KEY, c(0))
    led.observe(KEY, c(30).open_time)  # 20 minutes past the exchange's clock
    assert missing(led) == [] and led.streams[KEY].implausible == 1
    led.observe(KEY, c(12).open_time)  # within the clock's tolerance
    assert missing(led) == [(1, 11)]


def test_a_bogus_last_candle_on_disk_does_not_stop_the_stream():
    led, stored = ledger()
    led.begin(KEY, 10**16, [(T0, T0 + M)])
    assert led.accept(KEY, c(0)) and [t for t, _ in stored] == [T0]
    assert missing(led) == []


def test_polled_closes_follow_the_same_rule_and_are_stored_as_rest():
    """A kind with no stream (usdm mark) is polled: its closed rows take the live rule, its
    forming row declares the candles before it closed, and they are stored with source rest."""
    stored = []
    led = Ledger(
        lambda key, candle, source: stored.append((key, source)) or True, EventLog(), history=0
    )
    mark = StreamKey.parse("usdm:BTCUSDT:1m:mark")
    assert led.accept(mark, c(0), "rest") and led.accept(mark, c(1), "rest")
    assert not led.accept(mark, c(1), "rest")  # polled twice: a duplicate, dropped
    led.observe(mark, T0 + 4 * M)  # a later poll's forming row: 2 and 3 have closed
    st = led.streams[mark]
    assert [(r.first, r.last) for r in st.missing] == [(T0 + 2 * M, T0 + 3 * M)]
    assert (st.accepted_ws, st.accepted_poll, st.duplicates) == (0, 2, 1)
    assert stored == [(mark, "rest"), (mark, "rest")] and KEY not in led.streams


def test_the_hub_shows_the_ledgers_gaps_and_what_is_left_to_fetch():
    """The details view and the API read a stream's gaps from the hub's state: the watchdog's
    round copies them from the ledger (they used to stay 0 whatever happened)."""
    import time

    from kline_tui.recorder.hub import Hub, StreamState

    led, _ = ledger()
    hub = Hub({}, EventLog(), led, ping_interval_s=None)
    hub.streams[KEY] = StreamState(KEY)
    led.accept(KEY, c(0))
    led.accept(KEY, c(4))  # 1-3 lost
    led.observe(KEY, c(9).open_time)  # a reconnect: 5-8 lost
    hub.check_health(time.monotonic())
    assert (hub.streams[KEY].gaps, hub.streams[KEY].backfill) == (2, 7)
    led.fill(KEY, T0 + M, T0 + 8 * M, [c(i) for i in range(1, 9)], server_now=T0 + 10 * M)
    hub.check_health(time.monotonic())
    assert (hub.streams[KEY].gaps, hub.streams[KEY].backfill) == (2, 0)  # filled, still counted

"""Markets, intervals and stream specs."""

import calendar

import pytest

from kline_tui.model import Interval, Market, SpecError, StreamKey


def ms(y, mo, d, h=0, mi=0):
    return calendar.timegm((y, mo, d, h, mi, 0)) * 1000


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("usdm:BTCUSDT:1m", (Market.USDM, "BTCUSDT", Interval.M1)),
        ("spot:ethusdt:1s", (Market.SPOT, "ETHUSDT", Interval.S1)),
        ("coinm:BTCUSD_PERP:1M", (Market.COINM, "BTCUSD_PERP", Interval.MO1)),
        ("usdt_futures:BTCUSDT:5m", (Market.USDM, "BTCUSDT", Interval.M5)),
        ("coin_futures:ETHUSD_261225:1h", (Market.COINM, "ETHUSD_261225", Interval.H1)),
    ],
)
def test_parse_stream(spec, expected):
    key = StreamKey.parse(spec)
    assert (key.market, key.symbol, key.interval) == expected


@pytest.mark.parametrize(
    "spec, words",
    [
        ("usdm:BTCUSDT:1s", "no 1s interval"),
        ("usdm:BTCUSDT:7m", "unknown interval"),
        ("binance:BTCUSDT:1m", "unknown market"),
        ("spot:../x:1m", "invalid symbol"),
        ("spot:BTC/USDT:1m", "invalid symbol"),
        ("spot:BTCUSDT", "market:SYMBOL:interval"),
        ("spot::1m", "invalid symbol"),
    ],
)
def test_refused_specs_say_why(spec, words):
    with pytest.raises(SpecError, match=words):
        StreamKey.parse(spec)


def test_stream_name_and_str():
    key = StreamKey.parse("coinm:BTCUSD_PERP:5m")
    assert key.stream_name == "btcusd_perp@kline_5m"
    assert str(key) == "coinm:BTCUSD_PERP:5m"
    assert StreamKey.parse(str(key)) == key


def test_case_matters_minute_vs_month():
    assert Interval.parse("1m") is Interval.M1
    assert Interval.parse("1M") is Interval.MO1
    # On disk the month is "1mo", so it never shares a folder with "1m" on a case-insensitive FS.
    assert (Interval.M1.path_label, Interval.MO1.path_label) == ("1m", "1mo")


def test_interval_arithmetic():
    t = ms(2026, 11, 25, 16, 7)
    assert Interval.M5.open_time_at(t + 1234) == ms(2026, 11, 25, 16, 5)
    assert Interval.M1.close_time(t) == t + 59_999
    # Weeks open on Mondays: 2026-11-23 is a Monday.
    assert Interval.W1.open_time_at(t) == ms(2026, 11, 23)
    # Months follow the calendar, including December -> January.
    assert Interval.MO1.open_time_at(t) == ms(2026, 11, 1)
    assert Interval.MO1.next_open(ms(2026, 12, 1)) == ms(2027, 1, 1)
    assert Interval.MO1.prev_open(ms(2026, 3, 1)) == ms(2026, 2, 1)
    assert Interval.MO1.close_time(ms(2026, 2, 1)) == ms(2026, 3, 1) - 1
    assert Interval.M1.count_between(t, t + 4 * 60_000) == 5
    assert Interval.MO1.count_between(ms(2026, 1, 1), ms(2026, 12, 1)) == 12
    assert not Interval.H1.is_aligned(t)


def test_spot_alone_has_one_second():
    assert Interval.S1 in Market.SPOT.intervals
    assert Interval.S1 not in Market.USDM.intervals
    assert Interval.S1 not in Market.COINM.intervals


EXTREMES = [
    -(10**20),
    -(10**13),
    -1,
    0,
    1,
    ms(1, 1, 1),
    ms(9999, 12, 1),
    253_402_300_800_000,
    10**16,
    10**20,
]


def every_method(interval: Interval, t: int):
    """(name, a call of that method of `interval` at or around `t`) for each method."""
    return [
        ("open_time_at", lambda: interval.open_time_at(t)),
        ("next_open", lambda: interval.next_open(interval.open_time_at(t))),
        ("prev_open", lambda: interval.prev_open(interval.open_time_at(t))),
        ("close_time", lambda: interval.close_time(interval.open_time_at(t))),
        ("is_aligned", lambda: interval.is_aligned(t)),
        ("count_between", lambda: interval.count_between(0, t)),
    ]


@pytest.mark.parametrize("interval", list(Interval))
def test_interval_arithmetic_never_raises(interval):
    """A bogus time from a server or a huge history must not crash anything: every method
    answers for any int (datetime stops at years 1 and 9999)."""
    failures = []
    for t in EXTREMES:
        for name, call in every_method(interval, t):
            try:
                call()
            except Exception as exc:  # the point is to collect them
                failures.append(f"{name}({t}): {type(exc).__name__}: {exc}")
    assert failures == []


def test_month_arithmetic_far_from_today():
    # Around datetime's limits the months still follow the calendar.
    assert Interval.MO1.next_open(ms(9999, 12, 1)) == 253_402_300_800_000  # 10000-01-01
    assert Interval.MO1.prev_open(ms(1, 1, 1)) == ms(1, 1, 1) - 31 * 86_400_000  # 0000-12-01
    assert Interval.MO1.open_time_at(ms(1970, 1, 1) - 1) == ms(1969, 12, 1)
    assert Interval.MO1.next_open(ms(2100, 2, 1)) == ms(2100, 3, 1)  # 2100: not a leap year
    assert Interval.MO1.close_time(ms(2000, 2, 1)) == ms(2000, 3, 1) - 1  # 2000: a leap year
    # Counted, not stepped: 10**16 ms is some 3.8 million months.
    assert Interval.MO1.count_between(0, 10**16) == 3_802_649
    assert Interval.MO1.count_between(ms(2017, 1, 1), ms(2017, 1, 31)) == 1
    assert Interval.W1.is_aligned(ms(2026, 11, 23)) and not Interval.W1.is_aligned(ms(2026, 11, 24))

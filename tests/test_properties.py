"""Properties over arbitrary input: what a server, a config or a file sends cannot crash the core
or make it record, fetch or print the impossible.

(a) The decoder never raises for any JSON value or any mutation of a real kline frame, and what
    it keeps, checked as the connection checks it, is a candle that can exist.
(b) Interval arithmetic is exact and round-trips for every interval from 1970 to 2100 (checked
    against the standard library's calendar where it has one) and never raises beyond.
(c) The ledger never raises, and never holds or asks for an impossible candle, whatever the
    history and open times.
(d) No control character of any text reaches the event log.
"""

from __future__ import annotations

import calendar
import unicodedata
from datetime import UTC, datetime

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kline_tui.binance import wire
from kline_tui.model import EARLIEST_OPEN_MS, LATEST_MS, Candle, Interval, Market, StreamKey
from kline_tui.recorder.events import EventLog
from kline_tui.recorder.ledger import Ledger
from kline_tui.safe_text import safe_text

FAST = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# -- (a) the decoder ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)

T_REAL = 1_719_765_480_000  # 2024-06-30 16:38 UTC, a real candle's open time


def real_event(t=T_REAL, interval=Interval.M1, closed=False, event_time=None):
    """A kline frame as Binance sends it, as a dict to mutate."""
    close = interval.close_time(t)
    event_time = (close + 1 if closed else t + 1) if event_time is None else event_time
    return {
        "stream": "btcusdt@kline_1m",
        "data": {
            "e": "kline",
            "E": event_time,
            "s": "BTCUSDT",
            "k": {
                "t": t,
                "T": close,
                "s": "BTCUSDT",
                "i": interval.value,
                "f": 5122041311,
                "L": 5122041720,
                "o": "61607.90",
                "c": "61623.30",
                "h": "61623.30",
                "l": "61605.30",
                "v": "16.692",
                "n": 410,
                "x": closed,
                "q": "1028411.77850",
                "V": "8.100",
                "Q": "499003.12000",
                "B": "0",
            },
        },
    }


# Values a mutation tries besides any JSON: times near the real ones, numbers as strings.
near_values = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.integers(min_value=T_REAL - 10**9, max_value=T_REAL + 10**9)
    | st.sampled_from(
        [
            0,
            -1,
            10**16,
            2**63 - 1,
            EARLIEST_OPEN_MS - 1,
            LATEST_MS,
            "nan",
            "inf",
            "-1",
            "1e308",
            "",
            True,
            None,
        ]
    )
    | st.decimals(allow_nan=True).map(str)
)


@st.composite
def mutated_frames(draw):
    """(frame, interval, clock): a real kline frame of a random interval and time with up to
    four fields (anywhere in it, mostly in `k`) replaced or removed, and the exchange's clock
    as the connection knows it (None, near the event time, or anywhere)."""
    interval = draw(st.sampled_from(list(Interval)))
    t = interval.shift(interval.open_at_or_after(EARLIEST_OPEN_MS), draw(st.integers(0, 2000)))
    closed = draw(st.booleans())
    event = real_event(t, interval, closed)
    for _ in range(draw(st.integers(0, 4))):
        depth = draw(st.sampled_from([0, 1, 2, 2, 2, 2]))  # the frame, its "data", its "k"
        obj = event
        for name in ("data", "k")[:depth]:
            obj = obj.get(name) if isinstance(obj, dict) else None
        if not isinstance(obj, dict):
            continue  # an earlier mutation replaced or removed it
        key = draw(st.sampled_from([*sorted(obj), "extra"]))
        if draw(st.integers(0, 9)) == 0:
            obj.pop(key, None)
        else:
            obj[key] = draw(near_values | json_values)
    event_time = event["data"].get("E") if isinstance(event.get("data"), dict) else None
    if not isinstance(event_time, int) or draw(st.integers(0, 3)) == 0:
        clock = draw(st.none() | st.integers(EARLIEST_OPEN_MS, LATEST_MS))
    else:
        clock = event_time + draw(
            st.integers(-2 * wire.CLOCK_TOLERANCE_MS, 2 * wire.CLOCK_TOLERANCE_MS)
        )
    return msgspec.json.encode(event).decode(), interval, clock


def check_kept(msg, interval: Interval, clock_ms: int | None) -> None:
    """What the connection would keep of a decoded frame is a candle that can exist."""
    assert isinstance(msg, (wire.Envelope, wire.ControlReply, wire.Malformed))
    if not isinstance(msg, wire.Envelope) or not isinstance(msg.data, wire.KlineEvent):
        return
    k, event_time = msg.data.k, msg.data.E
    assert k.is_sane()
    if wire.implausible(k, event_time, interval, clock_ms) is not None:
        return
    t = k.open_time
    assert EARLIEST_OPEN_MS <= t <= event_time < LATEST_MS
    assert interval.is_aligned(t) and k.close_time == interval.close_time(t)
    assert not k.closed or k.close_time <= event_time + wire.CLOSE_LATENESS_MS
    if clock_ms is not None:
        assert abs(event_time - clock_ms) <= wire.CLOCK_TOLERANCE_MS


@FAST
@given(json_values)
def test_decode_never_raises_on_any_json(value):
    check_kept(wire.decode(msgspec.json.encode(value).decode()), Interval.M1, None)


@FAST
@given(st.text(max_size=200) | st.binary(max_size=50))
def test_decode_never_raises_on_any_text(frame):
    assert isinstance(wire.decode(frame), (wire.Envelope, wire.ControlReply, wire.Malformed))


@settings(
    max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(mutated_frames())
def test_a_mutated_kline_frame_never_yields_an_impossible_candle(case):
    frame, interval, clock_ms = case
    check_kept(wire.decode(frame), interval, clock_ms)


# -- (b) interval arithmetic ---------------------------------------------------------------

YEARS_1970_2100 = st.integers(min_value=0, max_value=LATEST_MS)
ANY_INT = st.integers(min_value=-(10**22), max_value=10**22)


def calendar_open(interval: Interval, t: int) -> int | None:
    """The open time containing `t` by the standard library, for the calendar intervals."""
    dt = datetime.fromtimestamp(t // 1000, tz=UTC)
    if interval is Interval.MO1:
        return calendar.timegm((dt.year, dt.month, 1, 0, 0, 0)) * 1000
    if interval is Interval.W1:
        day = calendar.timegm((dt.year, dt.month, dt.day, 0, 0, 0)) * 1000
        return day - dt.weekday() * 86_400_000  # back to Monday
    return None


@FAST
@given(st.sampled_from(list(Interval)), YEARS_1970_2100)
def test_open_times_round_trip_1970_to_2100(interval, t):
    o = interval.open_time_at(t)
    nxt = interval.next_open(o)
    assert o <= t < nxt
    assert interval.is_aligned(o) and interval.is_aligned(nxt)
    assert interval.prev_open(nxt) == o and interval.next_open(interval.prev_open(o)) == o
    assert interval.open_time_at(nxt - 1) == o and interval.close_time(o) == nxt - 1
    assert interval.is_aligned(t) == (o == t)
    assert interval.count_between(o, o) == 1 and interval.count_between(nxt, o) == 0
    assert interval.open_at_or_after(t) == (o if o == t else nxt)
    expected = calendar_open(interval, t)
    if expected is not None:
        assert o == expected
    else:  # the fixed intervals but the week count from the epoch
        assert o % interval.ms == 0


@FAST
@given(
    st.sampled_from(list(Interval)), YEARS_1970_2100, st.integers(0, 40), st.integers(0, 5 * 10**6)
)
def test_count_between_agrees_with_stepping(interval, t, steps, far):
    first = interval.open_time_at(t)
    last = first
    for _ in range(steps):
        last = interval.next_open(last)
    assert interval.count_between(first, last) == steps + 1
    assert interval.shift(first, steps) == last and interval.shift(last, -steps) == first
    # Between the open times, and for a last one far off, computed in one step.
    assert interval.count_between(first, interval.prev_open(last)) == steps
    assert interval.count_between(first, interval.shift(first, far)) == far + 1


@FAST
@given(st.sampled_from(list(Interval)), ANY_INT, ANY_INT)
def test_interval_arithmetic_never_raises_for_any_int(interval, a, b):
    o = interval.open_time_at(a)
    assert interval.is_aligned(o) and o <= a < interval.next_open(o)
    assert interval.prev_open(interval.next_open(o)) == o
    assert interval.count_between(min(a, b), max(a, b)) >= 1
    interval.close_time(o), interval.is_aligned(b), interval.open_at_or_after(b)


# -- (c) the ledger ------------------------------------------------------------------------

KEYS = [StreamKey(Market.SPOT, "BTCUSDT", Interval.S1)] + [
    StreamKey(Market.USDM, "BTCUSDT", iv) for iv in Interval if iv is not Interval.S1
]
NOW = 1_764_028_800_000  # 2025-11-25 00:00 UTC


def candle(key: StreamKey, t: int) -> Candle:
    return Candle(t, key.interval.close_time(t), 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0)


@st.composite
def open_times(draw, key: StreamKey):
    """Mostly real open times near NOW (in order, with holes), some anything at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(ANY_INT | st.sampled_from([0, -1, 10**16, EARLIEST_OPEN_MS - 1, LATEST_MS]))
    return key.interval.shift(key.interval.open_time_at(NOW), draw(st.integers(-3000, 50)))


@st.composite
def ledger_runs(draw):
    key = draw(st.sampled_from(KEYS))
    history = draw(st.integers(0, 10**6) | st.sampled_from([0, 1, 10**6]))
    ops = draw(
        st.lists(
            st.tuples(st.sampled_from(["observe", "accept", "fill", "begin"]), open_times(key)),
            max_size=25,
        )
    )
    return key, history, ops


@FAST
@given(ledger_runs(), st.none() | st.just(NOW + 600_000))
def test_the_ledger_never_raises_nor_holds_the_impossible(run, clock_ms):
    key, history, ops = run
    iv = key.interval
    led = Ledger(
        lambda k, c, s: True,
        EventLog(),
        history=history,
        exchange_now_ms=None if clock_ms is None else (lambda market: clock_ms),
    )
    for op, t in ops:
        if op == "observe":
            led.observe(key, t)
        elif op == "accept":
            led.accept(key, candle(key, t))
        elif op == "begin":
            led.forget(key)
            led.begin(key, t, [(iv.shift(t, -5), iv.shift(t, -3))])
        else:
            st_ = led.streams.get(key)
            for r in list(st_.missing if st_ else []):
                led.fill(key, r.first, r.last, [candle(key, r.first)], server_now=NOW)
    st_ = led.streams.get(key)
    if st_ is None:
        return
    # `last` is also the mark "settled up to here" a new stream gets just before its first
    # candle: for a first candle at the earliest possible open, that mark is the grid's candle
    # before it (a 3d stream's 2016-12-31, whose successor opens 2017-01-03), never stored.
    floor = iv.prev_open(iv.open_at_or_after(EARLIEST_OPEN_MS))
    assert st_.last is None or (floor <= st_.last < LATEST_MS and iv.is_aligned(st_.last))
    previous = None
    for r in st_.missing:
        assert EARLIEST_OPEN_MS <= r.first <= r.last < LATEST_MS
        assert iv.is_aligned(r.first) and iv.is_aligned(r.last)
        assert previous is None or previous.last < r.first  # sorted and disjoint
        previous = r
    st_.missing_count()


# -- (d) text from servers -----------------------------------------------------------------

BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def obeyable(text: str) -> list[str]:
    """The characters of `text` a terminal would act on rather than show."""
    return [
        ch for ch in text if unicodedata.category(ch) == "Cc" or ch in BIDI or ch in "\u2028\u2029"
    ]


def test_an_escape_sequence_from_a_server_never_reaches_the_event_log():
    events = EventLog()
    shown = []
    events.subscribe(lambda e: shown.append(e.message))
    events.warning("connection closed: \x1b[2J\x1b]0;pwned\x07going away")
    assert shown == [events.recent[-1].message] == ["connection closed: going away"]


@FAST
@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=400)
    | st.text("\x1b[]0;27JmP\\\x07\x9b\x9d\n\t\u202e ab", max_size=60),
    st.integers(1, 500),
)
def test_safe_text_leaves_nothing_a_terminal_would_obey(text, limit):
    out = safe_text(text, limit)
    assert obeyable(out) == [] and "\x1b" not in out and len(out) <= limit
    events = EventLog()
    events.error(text)
    assert obeyable(events.recent[-1].message) == []

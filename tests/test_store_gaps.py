"""The one gap finder: what the resume, `verify` and `backfill` call missing, over examples and
over arbitrary series (held and missing together are exactly the range, each candle once)."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kline_tui.model import Interval
from kline_tui.store.gaps import find_gaps

FAST = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

M5 = Interval.M5
STEP = 300_000
JAN, FEB, MAR, APR = 1735689600000, 1738368000000, 1740787200000, 1743465600000  # 2025, months


def test_a_bounded_range():
    assert find_gaps(M5, [], 0, 10 * STEP) == [(0, 10 * STEP)]
    held = [0, STEP, 5 * STEP, 10 * STEP]
    assert find_gaps(M5, held, 0, 10 * STEP) == [(2 * STEP, 4 * STEP), (6 * STEP, 9 * STEP)]
    assert find_gaps(M5, [0, STEP, 2 * STEP, 3 * STEP, 4 * STEP], STEP, 3 * STEP) == []
    assert find_gaps(Interval.MO1, [FEB], JAN, APR) == [(JAN, JAN), (MAR, APR)]


def test_without_bounds_only_the_holes_between_held_candles():
    assert find_gaps(M5, []) == []
    assert find_gaps(M5, [3 * STEP]) == []
    held = [0, STEP, 2 * STEP, 6 * STEP, 7 * STEP, 9 * STEP]
    assert find_gaps(M5, held) == [(3 * STEP, 5 * STEP), (8 * STEP, 8 * STEP)]
    assert find_gaps(Interval.MO1, [JAN, APR]) == [(FEB, MAR)]


def test_a_lower_bound_continues_from_a_candle_held_earlier():
    """As `verify` reads bucket by bucket: the gap from the previous bucket's last candle."""
    assert find_gaps(M5, [4 * STEP, 5 * STEP], first=2 * STEP) == [(2 * STEP, 3 * STEP)]
    assert find_gaps(M5, [2 * STEP], first=2 * STEP) == []


def test_repeats_and_times_inside_a_candle_count_once():
    assert find_gaps(M5, [0, 0, STEP, STEP + 1, 3 * STEP], 0, 3 * STEP) == [(2 * STEP, 2 * STEP)]


INTERVALS = st.sampled_from(
    [Interval.S1, Interval.M1, Interval.H4, Interval.D3, Interval.W1, Interval.MO1]
)


def candles(interval: Interval, start: int, n: int) -> list[int]:
    times = [interval.open_time_at(start)]
    for _ in range(n - 1):
        times.append(interval.next_open(times[-1]))
    return times


def expand(interval: Interval, runs: list[tuple[int, int]]) -> list[int]:
    out = []
    for a, b in runs:
        t = a
        while t <= b:
            out.append(t)
            t = interval.next_open(t)
    return out


@FAST
@given(
    interval=INTERVALS,
    start=st.integers(min_value=0, max_value=4_102_444_800_000),
    n=st.integers(min_value=1, max_value=120),
    data=st.data(),
)
def test_gaps_and_held_candles_are_the_whole_range(interval, start, n, data):
    full = candles(interval, start, n)
    held = sorted(data.draw(st.sets(st.sampled_from(full))))
    bounded = data.draw(st.booleans())
    first, last = (full[0], full[-1]) if bounded or not held else (None, None)
    runs = find_gaps(interval, held, first, last)

    missing = expand(interval, runs)
    span = full if first is not None else [t for t in full if held[0] <= t <= held[-1]]
    assert sorted(missing + held) == span  # every candle of the range once: held or missing
    assert all(a <= b for a, b in runs)
    # Runs are maximal: a held candle sits between any two.
    for (_, b), (a, _) in itertools.pairwise(runs):
        assert interval.next_open(b) < a and interval.next_open(b) in held


@FAST
@given(
    interval=st.sampled_from(list(Interval)),
    opens=st.lists(st.integers(min_value=-(2**62), max_value=2**62), max_size=20),
    first=st.none() | st.integers(min_value=-(2**62), max_value=2**62),
    last=st.none() | st.integers(min_value=-(2**62), max_value=2**62),
)
def test_never_raises_for_any_times(interval, opens, first, last):
    """Bogus open times from a damaged file still give an answer, not a crash."""
    runs = find_gaps(interval, sorted(opens), first, last)
    assert all(a <= b for a, b in runs)

"""Gaps: the runs of candles a series of open times lacks.

One answer for every reader that asks it: the recorder's resume (the holes a crash leaves between
candles on disk), `kline-tui verify` (gaps between a stream's first and last candle, bucket by
bucket) and `kline-tui backfill` (what of a range it must fetch). Interval arithmetic only
(`Interval` never raises for any int), so a bogus open time yields a wrong-looking gap, never an
exception.
"""

from __future__ import annotations

from collections.abc import Iterable

from kline_tui.model import Interval

__all__ = ["find_gaps"]


def find_gaps(
    interval: Interval, opens: Iterable[int], first: int | None = None, last: int | None = None
) -> list[tuple[int, int]]:
    """The runs (first, last missing open time, both included) of candles of `interval` that
    `opens` (held open times, ascending; repeats allowed) lacks, oldest first.

    `first` and `last` bound the range looked at (open times, both included). Without `first`
    the range starts at the first held candle, without `last` it ends at the last one: nothing
    before the first or after the last held candle is a gap then. Held times outside the
    bounds are ignored; a held time that is not an open time stands for the candle holding it.
    """
    runs: list[tuple[int, int]] = []
    expected = first  # the next open time not yet accounted for
    for held in opens:
        if expected is not None and held < expected:
            continue  # a repeat, or before the range
        if last is not None and held > last:
            break
        candle = interval.open_time_at(held)
        if expected is not None:
            before = interval.prev_open(candle)
            if before >= expected:
                runs.append((expected, before))
        expected = interval.next_open(candle)
    if expected is not None and last is not None and expected <= last:
        runs.append((expected, last))
    return runs

"""The ledger: per stream, which closed candles are held, and which are missing.

A stream's candles are held up to `last` (the newest open time held), except the open times in
`missing`. The rule that finds every gap is one comparison: any update (forming or closed) of
candle `t` proves that every candle before `t` has closed at the exchange, so the candles after
`last` and before `t` that never arrived are missing. That single rule covers a closed candle that
skips ahead, a final update that never came, the window lost across a reconnect, and a stream that
starts with no history. Missing candles are fetched from REST (see `backfill.py`); a late
WebSocket close fills its hole too. Whatever arrives for a candle already held is a duplicate and
is dropped. Which candles exist is decided from the candles' own open times and the exchange's
server time, never from the local clock.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kline_tui.model import _FIXED_MS, Candle, StreamKey
from kline_tui.recorder.events import EventLog

__all__ = ["Ledger", "StreamLedger", "MissingRange"]


@dataclass(slots=True)
class MissingRange:
    """Open times `first` to `last` (both included) not held; `since` is when it was noticed."""

    first: int
    last: int
    since: float  # local monotonic time, only to give late closes a grace period


@dataclass(slots=True)
class StreamLedger:
    """What is held of one stream."""

    key: StreamKey
    last: int | None = None  # newest open time held (or given up on)
    missing: list[MissingRange] = field(default_factory=list)  # sorted, disjoint
    accepted_ws: int = 0
    accepted_rest: int = 0
    duplicates: int = 0
    absent: int = 0  # candles the exchange itself no longer has (REST returned none)
    gaps: int = 0

    def missing_count(self) -> int:
        iv = self.key.interval
        return sum(iv.count_between(r.first, r.last) for r in self.missing)

    def holds(self, open_time: int) -> bool:
        if self.last is None or open_time > self.last:
            return False
        return self._find(open_time) is None

    def _find(self, open_time: int) -> int | None:
        i = bisect.bisect_right([r.first for r in self.missing], open_time) - 1
        if i >= 0 and self.missing[i].last >= open_time:
            return i
        return None

    def take(self, open_time: int) -> bool:
        """Mark a missing open time as held; False if it was not missing."""
        i = self._find(open_time)
        if i is None:
            return False
        r = self.missing[i]
        iv = self.key.interval
        pieces = []
        if r.first < open_time:
            pieces.append(MissingRange(r.first, iv.prev_open(open_time), r.since))
        if open_time < r.last:
            pieces.append(MissingRange(iv.next_open(open_time), r.last, r.since))
        self.missing[i : i + 1] = pieces
        return True

    def hold_back(self, open_time: int) -> None:
        """A candle received but not stored (recording paused): missing again, fetched later."""
        iv = self.key.interval
        for r in self.missing:
            if r.last == iv.prev_open(open_time):
                r.last = open_time
                return
            if r.first == iv.next_open(open_time):
                r.first = open_time
                return
        self.missing.append(MissingRange(open_time, open_time, time.monotonic()))
        self.missing.sort(key=lambda r: r.first)

    def add_missing(self, first: int, last: int) -> None:
        if first > last:
            return
        self.gaps += 1
        self.missing.append(MissingRange(first, last, time.monotonic()))
        self.missing.sort(key=lambda r: r.first)


class Ledger:
    """Decides, per stream, whether a closed candle is new, and tracks what is missing.

    `store(key, candle, source)` receives each new candle exactly once; it returns False when it
    does not take it now (recording paused), and the candle then counts as missing, to be fetched
    again later.
    """

    def __init__(
        self,
        store: Callable[[StreamKey, Candle, str], bool],
        events: EventLog,
        *,
        history: int = 1000,
    ) -> None:
        self.store = store
        self.events = events
        self.history = history  # candles fetched before the first one seen, for a new stream
        self.streams: dict[StreamKey, StreamLedger] = {}

    # -- start -------------------------------------------------------------------------------

    def begin(
        self, key: StreamKey, last_stored: int | None, holes: Iterable[tuple[int, int]] = ()
    ) -> StreamLedger:
        """Start tracking a stream whose newest candle on disk opens at `last_stored` (or none),
        with `holes` (first, last open times) missing on disk before it."""
        st = self.streams.get(key)
        if st is None:
            st = self.streams[key] = StreamLedger(key, last=last_stored)
            for first, last in holes:
                st.missing.append(MissingRange(first, last, 0.0))  # due at once
        return st

    def forget(self, key: StreamKey) -> None:
        """A stream no longer watched: a later re-add starts from what is on disk."""
        self.streams.pop(key, None)

    # -- the WebSocket side ------------------------------------------------------------------

    def observe(self, key: StreamKey, open_time: int) -> None:
        """A forming update of candle `open_time`: every candle before it has closed."""
        st = self.streams.get(key) or self.begin(key, None)
        last = st.last
        if last is not None:
            # The common case, every update but a stream's first and those after a hole: the
            # candle after the last one held, or one already held. Nothing to do.
            step = _FIXED_MS.get(key.interval)
            if step is not None and open_time <= last + step:
                return
        iv = key.interval
        if st.last is None:
            self._start_history(st, open_time)
            st.last = iv.prev_open(open_time)
        elif open_time > iv.next_open(st.last):
            st.add_missing(iv.next_open(st.last), iv.prev_open(open_time))
            st.last = iv.prev_open(open_time)

    def accept(self, key: StreamKey, candle: Candle) -> bool:
        """A closed candle from the WebSocket; True if it was new (and was stored)."""
        st = self.streams.get(key) or self.begin(key, None)
        iv = key.interval
        t = candle.open_time
        if st.last is None:
            self._start_history(st, t)
        elif t > st.last:
            if t != iv.next_open(st.last):
                st.add_missing(iv.next_open(st.last), iv.prev_open(t))
        elif not st.take(t):
            st.duplicates += 1
            return False
        if st.last is None or t > st.last:
            st.last = t
        if self.store(key, candle, "ws"):
            st.accepted_ws += 1
        else:
            st.hold_back(t)
        return True

    def _start_history(self, st: StreamLedger, first_seen: int) -> None:
        iv = st.key.interval
        if self.history <= 0:
            return
        first = first_seen
        for _ in range(self.history):
            first = iv.prev_open(first)
        st.add_missing(first, iv.prev_open(first_seen))
        st.gaps -= 1  # history to fetch is not a gap in the recording

    # -- the REST side -----------------------------------------------------------------------

    def due(self, grace_s: float) -> list[tuple[StreamKey, MissingRange]]:
        """Missing ranges noticed at least `grace_s` ago (late closes had their chance)."""
        now = time.monotonic()
        return [
            (key, r)
            for key, st in self.streams.items()
            for r in st.missing
            if now - r.since >= grace_s
        ]

    def fill(
        self, key: StreamKey, first: int, last: int, candles: Iterable[Candle], server_now: int
    ) -> int:
        """Store fetched candles that are still missing in [first, last]; returns how many.

        The caller fetched the whole range from REST at exchange time `server_now`. An open time
        in it that had closed by then and is still missing is one the exchange does not have: it
        is given up (counted as absent) rather than fetched forever.
        """
        st = self.streams.get(key)
        if st is None:
            return 0
        stored = 0
        for candle in candles:
            t = candle.open_time
            if first <= t <= last and st.take(t):
                if self.store(key, candle, "rest"):
                    st.accepted_rest += 1
                    stored += 1
                else:
                    st.hold_back(t)
        iv = key.interval
        for r in [r for r in st.missing if r.first <= last and r.last >= first]:
            lo, hi = max(r.first, first), min(r.last, last)
            t = lo
            while t <= hi and iv.close_time(t) < server_now:
                st.take(t)
                st.absent += 1
                t = iv.next_open(t)
        return stored

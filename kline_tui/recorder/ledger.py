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

Because one open time can declare millions of candles missing, an open time that cannot be real
(before 2017, after 2100, not aligned, more than ten years past the last one held, or past the
exchange's clock when the ledger is given one) is ignored and counted, never used: the connection
refuses such frames already (`wire.implausible`), and this is the guard behind it. History before
a new stream's first candle reaches back at most to 2017, however large `history` is.
"""

from __future__ import annotations

import bisect
import collections
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kline_tui.binance.wire import CLOCK_TOLERANCE_MS
from kline_tui.model import EARLIEST_OPEN_MS, FIXED_MS, LATEST_MS, CandleLike, Market, StreamKey
from kline_tui.recorder.events import EventLog

__all__ = ["AHEAD_TOLERANCE_MS", "MAX_JUMP_MS", "Ledger", "MissingRange", "StreamLedger"]

# How far past the last candle held a new open time may be: a recorder can be stopped for years,
# not for decades, and no gap is ever fetched from further than this.
MAX_JUMP_MS = 3653 * 24 * 3_600_000  # ten years
# How far past the exchange's clock (when known) an open time may be: the tolerance the
# connection applies to event times (the clock lags the server by its answers' delay, far less).
AHEAD_TOLERANCE_MS = CLOCK_TOLERANCE_MS

log = logging.getLogger(__name__)

# Live closes refused by the outlet remembered per stream, to know a second delivery of one.
_REFUSED_KEPT = 8


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
    accepted_poll: int = 0  # closed candles of a kind with no stream, from the poller
    duplicates: int = 0
    absent: int = 0  # candles the exchange itself no longer has (REST returned none)
    gaps: int = 0
    implausible: int = 0  # open times ignored as impossible (see the module's docstring)
    # The latest closes received live but not taken by the outlet (paused, a full buffer): a
    # second delivery of one (a replaced connection's overlap) is not new a second time.
    refused: collections.deque[int] = field(
        default_factory=lambda: collections.deque(maxlen=_REFUSED_KEPT)
    )

    def missing_count(self) -> int:
        """How many candles are missing (computed per range: no loop over candles)."""
        iv = self.key.interval
        return sum(iv.count_between(r.first, r.last) for r in self.missing)

    def holds(self, open_time: int) -> bool:
        """Whether the candle opening at `open_time` is held (or was given up)."""
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
        """A candle received but not stored (recording paused, the sink's buffer full): missing
        again, fetched later."""
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
        """Open times `first` to `last` are missing: a gap, fetched once its grace has passed."""
        if first > last:
            return
        self.gaps += 1
        self.missing.append(MissingRange(first, last, time.monotonic()))
        self.missing.sort(key=lambda r: r.first)

    def cut(self, first: int, last: int) -> int:
        """No longer count open times `first` to `last` as missing; returns how many were.

        Per range, not per candle: a range of millions is cut as fast as one of three.
        """
        if first > last:
            return 0
        iv = self.key.interval
        kept: list[MissingRange] = []
        removed = 0
        for r in self.missing:
            if r.last < first or r.first > last:
                kept.append(r)
                continue
            lo, hi = max(r.first, first), min(r.last, last)
            removed += iv.count_between(lo, hi)
            if r.first < lo:
                kept.append(MissingRange(r.first, iv.prev_open(lo), r.since))
            if hi < r.last:
                kept.append(MissingRange(iv.next_open(hi), r.last, r.since))
        self.missing = kept
        return removed


class Ledger:
    """Decides, per stream, whether a closed candle is new, and tracks what is missing.

    `store(key, candle, source)` receives each new candle exactly once; it returns False when it
    does not take it now (recording paused, the sink's buffer full), and the candle then counts
    as missing, to be fetched again later.
    """

    def __init__(
        self,
        store: Callable[[StreamKey, CandleLike, str], bool],
        events: EventLog,
        *,
        history: int = 1000,
        exchange_now_ms: Callable[[Market], int | None] | None = None,
        on_start: Callable[[StreamKey, int], None] | None = None,
    ) -> None:
        self.store = store
        # Told, for a stream with nothing on disk, the first open time it will hold (its history
        # included), so a resume after a crash knows where it was meant to begin.
        self.on_start = on_start
        self.events = events
        self.history = history  # candles fetched before the first one seen, for a new stream
        # The exchange's clock per market (e.g. `lambda m: rest.clock(m).now_ms()`), when known:
        # an open time past it is ignored. Without it, only the fixed bounds apply.
        self.exchange_now_ms = exchange_now_ms
        self.streams: dict[StreamKey, StreamLedger] = {}
        # Called with each fetched candle `fill` stores and the exchange time it was fetched at
        # (the alerts: a gap's candles complete windows); cheap; a failure is logged.
        self.fetched_listeners: list[Callable[[StreamKey, CandleLike, int], None]] = []

    # -- start -------------------------------------------------------------------------------

    def begin(
        self, key: StreamKey, last_stored: int | None, holes: Iterable[tuple[int, int]] = ()
    ) -> StreamLedger:
        """Start tracking a stream whose newest candle on disk opens at `last_stored` (or none),
        with `holes` (first, last open times) missing on disk before it."""
        st = self.streams.get(key)
        if st is None:
            st = self.streams[key] = StreamLedger(key)
            if last_stored is not None and not self._plausible(st, last_stored):
                last_stored = None  # a bogus row on disk: resume as a new stream instead
            st.last = last_stored
            for first, last in holes:
                if last_stored is not None and EARLIEST_OPEN_MS <= first <= last <= last_stored:
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
            step = FIXED_MS.get(key.interval)
            if step is not None and open_time <= last + step:
                return
        if not self._plausible(st, open_time):
            return
        iv = key.interval
        if st.last is None:
            self._start_history(st, open_time)
            st.last = iv.prev_open(open_time)
        elif open_time > iv.next_open(st.last):
            st.add_missing(iv.next_open(st.last), iv.prev_open(open_time))
            st.last = iv.prev_open(open_time)

    def accept(self, key: StreamKey, candle: CandleLike, source: str = "ws") -> bool:
        """A closed candle from the WebSocket (or, `source` "rest", from a poll of a kind with
        no stream: the same rule); True if it was new (and was stored)."""
        st = self.streams.get(key) or self.begin(key, None)
        iv = key.interval
        t = candle.open_time
        # The common case, the candle after the last one held, needs no check: it is on the
        # grid and next to a plausible one (the connection refused the rest already).
        step = FIXED_MS.get(iv)
        is_next = st.last is not None and step is not None and t == st.last + step
        if not is_next and not self._plausible(st, t):
            return False
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
        seen = t in st.refused  # received before, when the outlet refused it
        if self.store(key, candle, source):
            if source == "ws":
                st.accepted_ws += 1
            else:
                st.accepted_poll += 1
            if seen:
                st.refused.remove(t)
        else:
            st.hold_back(t)
            if not seen:
                st.refused.append(t)
        if seen:
            st.duplicates += 1
            return False
        return True

    def _start_history(self, st: StreamLedger, first_seen: int) -> None:
        """A new stream's history: the `history` candles before `first_seen`, none before 2017."""
        count = self._history_count()
        iv = st.key.interval
        first = max(iv.shift(first_seen, -count), iv.open_at_or_after(EARLIEST_OPEN_MS))
        if self.on_start is not None:
            self.on_start(st.key, min(first, first_seen))
        if count <= 0 or first > iv.prev_open(first_seen):
            return
        st.add_missing(first, iv.prev_open(first_seen))
        st.gaps -= 1  # history to fetch is not a gap in the recording

    def _history_count(self) -> int:
        try:
            return max(int(self.history), 0)
        except (TypeError, ValueError, OverflowError):  # None, NaN, inf: the config's to refuse
            return 0

    def _plausible(self, st: StreamLedger, open_time: int) -> bool:
        """Whether `open_time` can be a real candle of the stream; if not, it is counted and
        told once per stream, and the caller ignores it."""
        iv = st.key.interval
        reason = None
        if not EARLIEST_OPEN_MS <= open_time < LATEST_MS:
            reason = "before 2017 or after 2100"
        elif not iv.is_aligned(open_time):
            reason = "not aligned to the interval"
        elif st.last is not None and open_time > st.last + MAX_JUMP_MS:
            reason = "more than ten years after the last candle held"
        elif self.exchange_now_ms is not None:
            now = self.exchange_now_ms(st.key.market)
            if now is not None and open_time > now + AHEAD_TOLERANCE_MS:
                reason = "after the exchange's clock"
        if reason is None:
            return True
        st.implausible += 1
        if st.implausible == 1:
            self.events.warning(f"{st.key}: ignored a candle opening at {open_time!r}: {reason}")
        return False

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
        self, key: StreamKey, first: int, last: int, candles: Iterable[CandleLike], server_now: int
    ) -> int:
        """Store fetched candles that are still missing in [first, last]; returns how many.

        The caller fetched the whole range from REST at exchange time `server_now`. An open time
        in it that had closed by then and is still missing is one the exchange does not have: it
        is given up (counted as absent) rather than fetched forever.
        """
        st = self.streams.get(key)
        if st is None:
            return 0
        taken: list[CandleLike] = []
        not_taken: list[int] = []
        for candle in candles:
            t = candle.open_time
            if first <= t <= last and st.take(t):
                if self.store(key, candle, "rest"):
                    st.accepted_rest += 1
                    taken.append(candle)
                else:
                    not_taken.append(t)
        # Every candle of [first, last] closed at `server_now` and still missing is one the
        # exchange lacks: closed means opening before the candle that contains `server_now`.
        iv = key.interval
        last_closed = iv.prev_open(iv.open_time_at(server_now))
        st.absent += st.cut(first, min(last, last_closed))
        # Those the exchange sent but the outlet did not take (paused, a full buffer) are
        # missing again, after the cut: they exist, and are fetched later.
        for t in not_taken:
            st.hold_back(t)
        # Told after the bookkeeping, which a listener's failure must not cut short.
        for listener in self.fetched_listeners:
            for candle in taken:
                try:
                    listener(key, candle, server_now)
                except Exception:  # logged; the candles are stored all the same
                    log.exception("a listener of fetched candles failed on %s", key)
                    break
        return len(taken)

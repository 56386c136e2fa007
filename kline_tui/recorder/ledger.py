"""The ledger: per stream, the last closed candle held; it lets each candle through once.

A closed candle at or before the last one held is a duplicate and is dropped. One that skips
ahead leaves a gap, which is recorded (with the missing open times) so it can be filled.
Which candles exist is decided from the candles' own open times, never from the local clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kline_tui.model import StreamKey
from kline_tui.recorder.events import EventLog

__all__ = ["Ledger", "Gap"]


@dataclass(frozen=True, slots=True)
class Gap:
    """Candles missing from a stream: open times `first` to `last`, both included."""

    key: StreamKey
    first: int
    last: int

    @property
    def count(self) -> int:
        return self.key.interval.count_between(self.first, self.last)


class Ledger:
    """Drops duplicate closed candles, notes gaps, and passes each new candle to `store`."""

    def __init__(self, store: Callable[[StreamKey, object], None], events: EventLog) -> None:
        self.store = store
        self.events = events
        self.last: dict[StreamKey, int] = {}
        self.gaps: list[Gap] = []
        self.duplicates = 0
        self.accepted = 0

    def accept(self, key: StreamKey, candle) -> bool:
        """Take a closed candle; True if it was new (and was stored)."""
        open_time = candle.open_time
        last = self.last.get(key)
        if last is not None:
            if open_time <= last:
                self.duplicates += 1
                return False
            expected = key.interval.next_open(last)
            if open_time != expected:
                gap = Gap(key, expected, key.interval.prev_open(open_time))
                self.gaps.append(gap)
                self.events.warning(f"{key}: {gap.count} candles missing before this one")
        self.last[key] = open_time
        self.accepted += 1
        self.store(key, candle)
        return True

    def forget(self, key: StreamKey) -> None:
        """A stream no longer watched: a later re-add starts afresh."""
        self.last.pop(key, None)

"""The simulator's exchange clock: wall time, shifted and optionally running fast."""

from __future__ import annotations

import time

__all__ = ["SimClock"]


class SimClock:
    """Exchange time in epoch milliseconds.

    `now_ms()` is the wall time at construction (or `start_ms`, for a reproducible run), plus
    `offset_ms`, plus the monotonic time elapsed since construction multiplied by `speed` (0
    freezes the clock, for snapshots). Built on the monotonic clock so that a wall-clock step on
    the host never makes exchange time jump or run backwards.
    """

    __slots__ = ("_mono0", "_wall0_ms", "offset_ms", "speed")

    def __init__(self, speed: float = 1.0, offset_ms: int = 0, start_ms: int | None = None) -> None:
        if speed < 0:
            raise ValueError(f"clock speed must not be negative, got {speed}")
        self.speed = float(speed)
        self.offset_ms = int(offset_ms)
        self._wall0_ms = time.time() * 1000.0 if start_ms is None else float(start_ms)
        self._mono0 = time.monotonic()

    def now_ms(self) -> int:
        """Current exchange time (ms since the epoch, UTC)."""
        elapsed = time.monotonic() - self._mono0
        return int(self._wall0_ms + self.offset_ms + elapsed * self.speed * 1000.0)

    def real_seconds_until(self, exchange_ms: int) -> float:
        """Real (monotonic) seconds until the exchange clock reaches `exchange_ms`; <= 0 if past."""
        remaining = exchange_ms - self.now_ms()
        if self.speed == 0:
            return 0.0 if remaining <= 0 else float("inf")
        return remaining / (self.speed * 1000.0)

    def __repr__(self) -> str:
        return f"SimClock(speed={self.speed}, offset_ms={self.offset_ms})"

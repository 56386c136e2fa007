"""The exchange's clock, as the client knows it between two REST server-time answers.

Which candles exist is decided from exchange time only (never the local clock), and a frame
whose event time is far from the exchange's own clock is bogus. The client learns that clock from
REST `/time` answers and carries it forward with a local clock that never steps: the last server
time plus the local time elapsed since. The local wall clock is never used, since it can be skewed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from kline_tui.model import EARLIEST_OPEN_MS, LATEST_MS

__all__ = ["ExchangeClock", "checked_rate", "local_seconds"]


def checked_rate(rate: float) -> float:
    """`rate` as a float, or ValueError unless it is a positive finite number."""
    if (
        isinstance(rate, bool)
        or not isinstance(rate, (int, float))
        or not (math.isfinite(rate) and rate > 0)
    ):
        raise ValueError(f"clock rate must be a positive finite number, got {rate!r}")
    return float(rate)


def _boot_seconds() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


# Linux's CLOCK_BOOTTIME keeps counting while the machine sleeps; CLOCK_MONOTONIC (what
# time.monotonic reads there) stops, so after a laptop's resume the carried-forward exchange time
# would lag by the whole sleep and every frame would look far in the future.
local_seconds: Callable[[], float] = (
    _boot_seconds if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic
)


class ExchangeClock:
    """The exchange's time in epoch milliseconds: the last server time noted, plus the local
    time elapsed since, times `rate`.

    `rate` is how fast the exchange's clock runs against the local one: 1 for Binance; the
    simulator's speed for a simulator that runs fast. Server times before 2017 or after 2100 are
    refused (counted in `refused`): no exchange can answer them, and one bogus answer must not move
    the clock that every frame is checked against.
    """

    __slots__ = ("_local", "_local_at", "_server_ms", "rate", "refused")

    def __init__(self, *, rate: float = 1.0, local: Callable[[], float] | None = None) -> None:
        self.rate = checked_rate(rate)
        self.refused = 0  # server times ignored as impossible
        self._local = local or local_seconds
        self._server_ms: int | None = None
        self._local_at = 0.0

    def note(self, server_ms: int) -> bool:
        """Set the clock from a server time just received; False (and ignored) if impossible."""
        if type(server_ms) is not int or not EARLIEST_OPEN_MS <= server_ms < LATEST_MS:
            self.refused += 1
            return False
        self._server_ms = server_ms
        self._local_at = self._local()
        return True

    @property
    def known(self) -> bool:
        """Whether a server time has been noted."""
        return self._server_ms is not None

    def now_ms(self) -> int | None:
        """The exchange's current time, or None before the first server time."""
        if self._server_ms is None:
            return None
        return self._server_ms + int((self._local() - self._local_at) * 1000.0 * self.rate)

    def age_s(self) -> float | None:
        """Local seconds since the last server time was noted (None if never): a caller that
        wants the clock fresh asks the server again past its own limit."""
        if self._server_ms is None:
            return None
        return self._local() - self._local_at

    def __repr__(self) -> str:
        return f"ExchangeClock(now_ms={self.now_ms()}, rate={self.rate:g})"

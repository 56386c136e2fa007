"""Misbehaviour on request: switches a test flips while the simulator runs.

Every switch takes `market=None` meaning all three markets. Rates are probabilities per event,
drawn from the simulator's own random generator, never from the candle hashes, so faults make
delivery imperfect while every candle that is delivered stays exact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from kline_tui.model import Market

__all__ = ["Faults", "MarketFaults", "RestFailure"]


class FaultTarget(Protocol):
    """What a fault can do to one open WebSocket connection (implemented in ws.py)."""

    def abort(self) -> None: ...
    async def close(self, code: int, reason: str) -> None: ...
    async def send_raw(self, frame: str | bytes) -> None: ...
    async def send_server_shutdown(self) -> None: ...


@dataclass
class RestFailure:
    """The next `remaining` REST calls answer `status`."""

    status: int
    remaining: int
    retry_after: int | None = None


@dataclass
class MarketFaults:
    """The fault state of one market. Deadlines are `time.monotonic()` seconds."""

    malformed_rate: float = 0.0
    duplicate_close_rate: float = 0.0
    late_close_rate: float = 0.0
    drop_close_rate: float = 0.0
    lifetime_s: float | None = None
    rest_delay_s: float = 0.0
    stall_until: float = 0.0
    stream_stalls: dict[str, float] = field(default_factory=dict)
    refuse_until: float = 0.0
    rest_failure: RestFailure | None = None

    def stalled(self, stream: str, now: float) -> bool:
        """Whether kline events of `stream` are held back at monotonic time `now`."""
        if now < self.stall_until:
            return True
        until = self.stream_stalls.get(stream)
        return until is not None and now < until

    def refusing(self, now: float) -> bool:
        """Whether WebSocket handshakes are refused at monotonic time `now`."""
        return now < self.refuse_until

    def take_rest_failure(self) -> RestFailure | None:
        """Consume one injected REST failure, if any is pending."""
        failure = self.rest_failure
        if failure is None:
            return None
        failure.remaining -= 1
        if failure.remaining <= 0:
            self.rest_failure = None
        return failure


_RATE_FIELDS = (
    "malformed_rate",
    "duplicate_close_rate",
    "late_close_rate",
    "drop_close_rate",
    "lifetime_s",
    "rest_delay_s",
)


class _EveryMarket:
    """A rate switch on `Faults`: writing sets it on every market, reading gives the largest."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Faults | None, owner: type | None = None) -> float | None:
        if obj is None:
            return self  # type: ignore[return-value]
        values = [getattr(obj[m], self.name) for m in Market]
        present = [v for v in values if v is not None]
        return max(present) if present else None

    def __set__(self, obj: Faults, value: float | None) -> None:
        obj.set(None, **{self.name: value})


def _done() -> asyncio.Future[None]:
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


class Faults:
    """The simulator's fault switches.

    Setting a rate attribute (`faults.malformed_rate = 0.1`) sets it on every market; reading it
    gives the largest value among markets. `faults[market]` is that market's `MarketFaults` for
    per-market settings. Actions that act on open connections (`drop`, `inject`,
    `server_shutdown`) start at once and return an awaitable that completes when every
    connection has been dealt with; awaiting it is optional.
    """

    malformed_rate = _EveryMarket()
    """Probability, per pushed frame, of also sending a malformed frame."""
    duplicate_close_rate = _EveryMarket()
    """Probability that a closed (x: true) event is sent twice."""
    late_close_rate = _EveryMarket()
    """Probability that a closed event comes after the next candle's first forming update."""
    drop_close_rate = _EveryMarket()
    """Probability that a closed event is never sent."""
    lifetime_s = _EveryMarket()
    """Real seconds after which the server closes a connection cleanly (None: never)."""
    rest_delay_s = _EveryMarket()
    """Latency added to every REST call."""

    def __init__(self, connections: Callable[[Market], Iterable[FaultTarget]]) -> None:
        self._by_market = {m: MarketFaults() for m in Market}
        self._connections = connections

    def __getitem__(self, market: Market) -> MarketFaults:
        return self._by_market[Market(market)]

    def _markets(self, market: Market | None) -> list[Market]:
        return list(Market) if market is None else [Market(market)]

    def set(self, market: Market | None = None, **values: float | None) -> None:
        """Set rate switches (`malformed_rate=0.1, lifetime_s=5`...) on one market or all."""
        for name in values:
            if name not in _RATE_FIELDS:
                raise AttributeError(f"no fault switch {name!r}; use one of {', '.join(_RATE_FIELDS)}")
        for m in self._markets(market):
            for name, value in values.items():
                setattr(self._by_market[m], name, value)

    def reset(self) -> None:
        """Turn every fault off."""
        for m in Market:
            self._by_market[m] = MarketFaults()

    def stall(self, seconds: float, market: Market | None = None, streams: Iterable[str] | None = None) -> None:
        """Send no kline events (of every stream, or only of `streams`) for `seconds`.

        Connections and pings stay up; events that fall in the stall are lost, as when an
        exchange's stream dies behind a healthy socket.
        """
        until = time.monotonic() + seconds
        names = None if streams is None else list(streams)
        for m in self._markets(market):
            state = self._by_market[m]
            if names is None:
                state.stall_until = until
            else:
                for name in names:
                    state.stream_stalls[name] = until

    def refuse_connections(self, seconds: float, market: Market | None = None) -> None:
        """Answer WebSocket handshakes with HTTP 503 for `seconds`."""
        until = time.monotonic() + seconds
        for m in self._markets(market):
            self._by_market[m].refuse_until = until

    def rest_fail(
        self, status: int, count: int, retry_after: int | None = None, market: Market | None = None
    ) -> None:
        """Answer the next `count` REST calls (per market) with HTTP `status`.

        429 and 418 carry `Retry-After` (default 1 s) and Binance's -1003 body; other statuses a
        generic Binance error body.
        """
        for m in self._markets(market):
            self._by_market[m].rest_failure = RestFailure(status, count, retry_after)

    def drop(self, market: Market | None = None, clean: bool = False) -> Awaitable[None]:
        """Close every open connection now: abruptly (transport aborted, no close frame) or
        cleanly (close frame 1001)."""
        targets = self._targets(market)
        if not clean:
            for conn in targets:
                conn.abort()
            return _done()
        return self._all(conn.close(1001, "going away") for conn in targets)

    def inject(self, frame: str | bytes, market: Market | None = None) -> Awaitable[None]:
        """Send this exact frame (text for str, binary for bytes) on every open connection."""
        return self._all(conn.send_raw(frame) for conn in self._targets(market))

    def server_shutdown(self, market: Market | None = None) -> Awaitable[None]:
        """Send the `serverShutdown` notice on every open connection."""
        return self._all(conn.send_server_shutdown() for conn in self._targets(market))

    def _targets(self, market: Market | None) -> list[FaultTarget]:
        return [conn for m in self._markets(market) for conn in self._connections(m)]

    def _all(self, coros: Iterable[Awaitable[None]]) -> Awaitable[None]:
        # return_exceptions: a connection closing under us is not the caller's problem.
        return asyncio.ensure_future(asyncio.gather(*coros, return_exceptions=True))

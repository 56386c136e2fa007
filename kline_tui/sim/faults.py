"""Misbehaviour on request: switches a test flips while the simulator runs.

Every switch takes `market=None` meaning all three markets. Rates are probabilities per event,
drawn from the simulator's own random generator, never from the candle hashes, so faults make
delivery imperfect while every candle that is delivered stays exact.

The imperfect exchange: `drop`, `stall`, `refuse_connections`, `rest_fail`, `inject`,
`server_shutdown`, and the rates `malformed_rate`, `duplicate_close_rate`, `late_close_rate`,
`drop_close_rate`, `lifetime_s`, `rest_delay_s`.

The hostile server, for clients that must survive a server that lies or attacks:

- `poison(rate, market, streams, kinds, replace)`: impossible kline events (`sim.poison` lists
  the shapes: event time hours off the clock, unaligned / pre-2017 / future / 10**16 open times,
  a close long before `T`, NaN / negative / infinite numbers, another symbol or interval, integers
  beyond 64 bits), `rate` of them per real frame of the chosen streams, sent beside the real
  frames or, with `replace=True`, instead of them. Real candles are never altered: a poisoned
  candle's prices are twice the real ones.
- `poison_rest(rate, market, symbols, kinds)`: impossible rows mixed into klines answers, `rate`
  per real row, at random places.
- `ping_flood_per_s` and `stray_replies_per_s` (rate switches; `math.inf`: as fast as the loop
  goes): WebSocket pings, and `{"result":null,"id":<random>}` replies nobody asked for. While
  either is on, a client's close frame is not answered and the flood goes on until the client
  drops the TCP connection or the switch is turned off: aiohttp's `ws.close()` reads until a
  close frame comes, so a client that awaits it with no deadline, its session still open, hangs.
- `sized_frames(limit_bytes, rate, market, streams)`: beside a real kline frame, two copies of it
  padded to `limit_bytes - 1` and `limit_bytes + 1` bytes.
- `handshake_delay_s` (rate switch): accept TCP, answer the WebSocket upgrade that many seconds
  later (`math.inf`: never, until the switch is turned down).
- `hostile_text(text, market)`: `text` (by default `HOSTILE_TEXT`, terminal escape sequences) is
  appended to every close reason, control error message and REST error message.
- `refuse_connections(seconds, market, status=429 or 418, retry_after=...)`: handshakes answered
  with a rate-limit status and a `Retry-After` header.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, overload

from kline_tui.model import Market
from kline_tui.sim.poison import POISON_KINDS, REST_POISON_KINDS

__all__ = [
    "HOSTILE_TEXT",
    "Faults",
    "MarketFaults",
    "Poison",
    "RestFailure",
    "RestPoison",
    "SizedFrames",
]

HOSTILE_TEXT = "\x1b[2J\x1b]0;pwned\x07"
"""Clears a terminal's screen and retitles its window when printed raw."""
_CLOSE_REASON_BYTES = 123  # what a WebSocket close frame can carry


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


def _rate_count(rate: float, roll: float) -> int:
    """How many frames a rate asks for now: its whole part, plus one with its fraction's odds."""
    whole = math.floor(rate)
    return whole + (roll < rate - whole)


@dataclass
class Poison:
    """Poisoned kline events on one market; shapes are taken in turn, so every one shows up."""

    rate: float
    kinds: tuple[str, ...]
    streams: frozenset[str] | None  # None: every stream
    replace: bool
    _turn: itertools.cycle = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._turn = itertools.cycle(self.kinds)

    def applies(self, stream: str) -> bool:
        """Whether frames of `stream` are poisoned."""
        return self.streams is None or stream in self.streams

    def count(self, roll: float) -> int:
        """How many poisoned frames go with one real frame, given a uniform `roll`."""
        return _rate_count(self.rate, roll)

    def next_kind(self) -> str:
        """The next shape to send."""
        return next(self._turn)


@dataclass
class RestPoison(Poison):
    """Poisoned rows in one market's klines answers; `streams` holds symbols here."""


@dataclass
class SizedFrames:
    """Padded copies of real kline frames, one byte under and one over `limit_bytes`."""

    limit_bytes: int
    rate: float
    streams: frozenset[str] | None

    def applies(self, stream: str) -> bool:
        """Whether frames of `stream` get padded copies."""
        return self.streams is None or stream in self.streams


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
    refuse_status: int = 503
    refuse_retry_after: int | None = None
    rest_failure: RestFailure | None = None
    poison: Poison | None = None
    rest_poison: RestPoison | None = None
    sized: SizedFrames | None = None
    ping_flood_per_s: float = 0.0
    stray_replies_per_s: float = 0.0
    handshake_delay_s: float = 0.0
    hostile_text: str | None = None

    @property
    def flooding(self) -> bool:
        """Whether pings or stray replies are being flooded (and a client's close is ignored)."""
        return bool(self.ping_flood_per_s or self.stray_replies_per_s)

    def with_hostile_text(self, text: str) -> str:
        """`text` for a peer to read: with the hostile text appended when that switch is on."""
        return text if self.hostile_text is None else f"{text} {self.hostile_text}"

    def close_reason(self, reason: str) -> bytes:
        """A close frame's reason, hostile text included, cut to what a close frame carries."""
        return self.with_hostile_text(reason).encode()[:_CLOSE_REASON_BYTES]

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
    "ping_flood_per_s",
    "stray_replies_per_s",
    "handshake_delay_s",
)


class _EveryMarket:
    """A rate switch on `Faults`: writing sets it on every market, reading gives the largest."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _EveryMarket: ...
    @overload
    def __get__(self, obj: Faults, owner: type | None = None) -> float | None: ...
    def __get__(self, obj: Faults | None, owner: type | None = None) -> _EveryMarket | float | None:
        if obj is None:
            return self
        values = [getattr(obj[m], self.name) for m in Market]
        present = [v for v in values if v is not None]
        return max(present) if present else None

    def __set__(self, obj: Faults, value: float | None) -> None:
        obj.set(None, **{self.name: value})


def _kinds(kinds: Iterable[str] | None, known: tuple[str, ...]) -> tuple[str, ...]:
    chosen = known if kinds is None else tuple(kinds)
    unknown = [k for k in chosen if k not in known]
    if unknown or not chosen:
        raise ValueError(f"unknown poison shapes {unknown}; use some of {', '.join(known)}")
    return chosen


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
    ping_flood_per_s = _EveryMarket()
    """WebSocket pings sent per second on every connection (math.inf: as fast as possible)."""
    stray_replies_per_s = _EveryMarket()
    """Unrequested `{"result":null,"id":<random>}` replies per second (math.inf: as fast as
    possible)."""
    handshake_delay_s = _EveryMarket()
    """Seconds a WebSocket upgrade waits for its answer (math.inf: until this is lowered)."""

    def __init__(self, connections: Callable[[Market], Iterable[FaultTarget]]) -> None:
        self._by_market = {m: MarketFaults() for m in Market}
        self._connections = connections

    def __getitem__(self, market: Market) -> MarketFaults:
        return self._by_market[Market(market)]

    def _markets(self, market: Market | None) -> list[Market]:
        return list(Market) if market is None else [Market(market)]

    def set(self, market: Market | None = None, **values: float | None) -> None:
        """Set rate switches (`malformed_rate=0.1, lifetime_s=5, ping_flood_per_s=math.inf`...)
        on one market or all."""
        for name in values:
            if name not in _RATE_FIELDS:
                raise AttributeError(
                    f"no fault switch {name!r}; use one of {', '.join(_RATE_FIELDS)}"
                )
        for m in self._markets(market):
            for name, value in values.items():
                setattr(self._by_market[m], name, value)

    def reset(self) -> None:
        """Turn every fault off, in place: open connections hold their market's MarketFaults, so
        replacing the object would leave them obeying the old switches."""
        off = MarketFaults()
        for m in Market:
            for spec in dataclasses.fields(MarketFaults):
                # Containers are copied, never shared between markets.
                setattr(self._by_market[m], spec.name, copy.copy(getattr(off, spec.name)))

    def stall(
        self, seconds: float, market: Market | None = None, streams: Iterable[str] | None = None
    ) -> None:
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

    def refuse_connections(
        self,
        seconds: float,
        market: Market | None = None,
        status: int = 503,
        retry_after: int | None = None,
    ) -> None:
        """Answer WebSocket handshakes with HTTP `status` for `seconds`.

        429 and 418 carry `Retry-After: retry_after` (default 1 s) and Binance's -1003 body, as
        REST does; 503 carries no header unless `retry_after` is given.
        """
        until = time.monotonic() + seconds
        for m in self._markets(market):
            state = self._by_market[m]
            state.refuse_until = until
            state.refuse_status = status
            state.refuse_retry_after = retry_after

    def poison(
        self,
        rate: float = 1.0,
        market: Market | None = None,
        streams: Iterable[str] | None = None,
        kinds: Iterable[str] | None = None,
        replace: bool = False,
    ) -> None:
        """Send impossible kline events on `streams` (stream names; None: all), `rate` per real
        frame (2.5: two, and a third half the time), in the shapes `kinds` (default: all of
        `POISON_KINDS`, in turn). `replace`: the real frames of those streams are not sent.
        A rate of 0 turns poisoning off."""
        chosen = _kinds(kinds, POISON_KINDS)
        names = None if streams is None else frozenset(streams)
        for m in self._markets(market):
            self._by_market[m].poison = Poison(rate, chosen, names, replace) if rate > 0 else None

    def poison_rest(
        self,
        rate: float = 1.0,
        market: Market | None = None,
        symbols: Iterable[str] | None = None,
        kinds: Iterable[str] | None = None,
    ) -> None:
        """Mix impossible rows into klines answers for `symbols` (None: all): `rate` per real
        row, at random places, in the shapes `kinds` (default: all of `REST_POISON_KINDS`, in
        turn). A rate of 0 turns it off."""
        chosen = _kinds(kinds, REST_POISON_KINDS)
        names = None if symbols is None else frozenset(symbols)
        for m in self._markets(market):
            self._by_market[m].rest_poison = (
                RestPoison(rate, chosen, names, False) if rate > 0 else None
            )

    def sized_frames(
        self,
        limit_bytes: int | None,
        rate: float = 1.0,
        market: Market | None = None,
        streams: Iterable[str] | None = None,
    ) -> None:
        """With probability `rate` per real kline frame of `streams` (None: all), also send two
        copies of it padded to `limit_bytes - 1` and `limit_bytes + 1` bytes. None turns it off."""
        if limit_bytes is not None and limit_bytes < 2048:
            raise ValueError(
                "limit_bytes must be at least 2048 (a kline frame is up to ~600), "
                f"got {limit_bytes}"
            )
        names = None if streams is None else frozenset(streams)
        for m in self._markets(market):
            self._by_market[m].sized = (
                None if limit_bytes is None else SizedFrames(limit_bytes, rate, names)
            )

    def hostile_text(self, text: str | None = HOSTILE_TEXT, market: Market | None = None) -> None:
        """Append `text` to every close reason, control error and REST error message (None: off)."""
        for m in self._markets(market):
            self._by_market[m].hostile_text = text

    def rest_fail(
        self, status: int, count: int, retry_after: int | None = None, market: Market | None = None
    ) -> None:
        """Answer the next `count` REST calls (per market) with HTTP `status`.

        429 and 418 carry `Retry-After` (default 1 s) and Binance's -1003 body; other statuses a
        generic Binance error body.
        """
        for m in self._markets(market):
            self._by_market[m].rest_failure = RestFailure(status, count, retry_after)

    def drop(self, market: Market | None = None, clean: bool = False) -> Awaitable[object]:
        """Close every open connection now: abruptly (transport aborted, no close frame) or
        cleanly (close frame 1001)."""
        targets = self._targets(market)
        if not clean:
            for conn in targets:
                conn.abort()
            return _done()
        return self._all(conn.close(1001, "going away") for conn in targets)

    def inject(self, frame: str | bytes, market: Market | None = None) -> Awaitable[object]:
        """Send this exact frame (text for str, binary for bytes) on every open connection."""
        return self._all(conn.send_raw(frame) for conn in self._targets(market))

    def server_shutdown(self, market: Market | None = None) -> Awaitable[object]:
        """Send the `serverShutdown` notice on every open connection."""
        return self._all(conn.send_server_shutdown() for conn in self._targets(market))

    def _targets(self, market: Market | None) -> list[FaultTarget]:
        return [conn for m in self._markets(market) for conn in self._connections(m)]

    def _all(self, coros: Iterable[Awaitable[None]]) -> Awaitable[object]:
        # return_exceptions: a connection closing under us is not the caller's problem.
        return asyncio.ensure_future(asyncio.gather(*coros, return_exceptions=True))

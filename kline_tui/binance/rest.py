"""Binance REST: server time, exchangeInfo and klines, within each market's request-weight budget.

One `WeightLimiter` per budget (spot has its own; USD-M and COIN-M share one since mid-2026). It
reads `X-MBX-USED-WEIGHT-1M` from every answer, holds requests back before the budget runs out,
and honours `Retry-After` on 429 and 418 (a 418 is a ban: REST for that budget stops until it
ends), capped at RETRY_AFTER_CAP_S whatever the header says. 5xx answers and timeouts are retried
with capped, jittered backoff.

Each market has an `ExchangeClock`, set by every server-time answer. Kline rows that cannot be
real (see `wire.implausible_candle`, plus the requested range and the exchange's clock) are
dropped and counted in `rejected_rows`, never raised on: one bad row must not cost the others.
A body that is not a list of kline rows at all is a RestError.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from kline_tui.binance.clock import ExchangeClock, checked_rate
from kline_tui.binance.markets import MARKETS, Endpoints, kind_params, kline_weight
from kline_tui.binance.wire import CLOCK_TOLERANCE_MS, DEFAULT_PREMIUM_BOUND, implausible_candle
from kline_tui.model import Candle, Interval, Kind, Market, StreamKey
from kline_tui.safe_text import safe_text

__all__ = [
    "RETRY_AFTER_CAP_S",
    "RestClient",
    "RestError",
    "SymbolInfo",
    "WeightLimiter",
    "retry_after_s",
]

log = logging.getLogger(__name__)

_MINUTE_MS = 60_000

# The longest a Retry-After is obeyed. Binance's bans last up to 3 days, but a header of a billion
# seconds (or a buggy mirror's) must not stop REST for decades; an hour later, a still-banned
# client simply hears a new Retry-After.
RETRY_AFTER_CAP_S = 3600.0
_DEFAULT_RETRY_AFTER_S = 60.0  # a 429 or 418 without a readable Retry-After


class RestError(Exception):
    """A REST call that failed for good: the message names the market, the call and the cause."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """What exchangeInfo says of one symbol."""

    symbol: str
    status: str
    contract_size: float | None = None
    pair: str | None = None  # futures: the pair (index and continuous klines are keyed by it)
    contract_type: str | None = None  # futures: PERPETUAL, CURRENT_QUARTER, NEXT_QUARTER, ...

    @property
    def tradable(self) -> bool:
        """Whether the symbol trades now."""
        return self.status == "TRADING"


class WeightLimiter:
    """Keeps one request-weight budget, shared by every market that draws on it."""

    def __init__(
        self, budget: int, headroom: float = 0.9, *, clock: ExchangeClock | None = None
    ) -> None:
        self.budget = budget
        self.limit = int(budget * headroom)
        self.used = 0  # as last reported by the exchange for the current minute
        self.minute = -1  # the exchange minute `used` belongs to (server ms // 60000)
        self.blocked_until = 0.0  # monotonic time before which no request may go out
        self.banned = False  # the block comes from a 418
        # The budget's minutes are the exchange's; markets sharing a budget share this clock.
        self.clock = clock or ExchangeClock()
        self._lock = asyncio.Lock()

    @property
    def server_offset_ms(self) -> int | None:
        """Exchange time minus local monotonic ms (None before the first server time)."""
        now = self.clock.now_ms()
        return None if now is None else now - int(time.monotonic() * 1000)

    def server_now_ms(self) -> int | None:
        """The exchange's current time as this budget's clock knows it, or None."""
        return self.clock.now_ms()

    def note_server_time(self, server_ms: int) -> bool:
        """Set the clock from a server time; False (and ignored) if it cannot be real."""
        return self.clock.note(server_ms)

    async def acquire(self, weight: int) -> None:
        """Wait until `weight` more fits in the budget and no Retry-After is in force."""
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self.blocked_until:
                    await asyncio.sleep(self.blocked_until - now)
                    continue
                self.banned = False
                server_now = self.server_now_ms()
                if server_now is not None and server_now // _MINUTE_MS != self.minute:
                    self.used, self.minute = 0, server_now // _MINUTE_MS
                if self.used + weight <= self.limit:
                    self.used += weight  # provisional; the answer's header corrects it
                    return
                # Wait for the exchange's next minute; without its clock, a whole minute.
                wait = 60.0
                if server_now is not None:
                    wait = (_MINUTE_MS - server_now % _MINUTE_MS) / 1000 + 0.05
                await asyncio.sleep(wait)
                self.used = 0

    def note_used(self, used: int) -> None:
        """The weight the exchange reports used in its current minute."""
        self.used = used
        server_now = self.server_now_ms()
        if server_now is not None:
            self.minute = server_now // _MINUTE_MS

    def block(self, seconds: float, banned: bool) -> None:
        """Send nothing for `seconds` (kept within 0..RETRY_AFTER_CAP_S); `banned` after a 418."""
        if not seconds >= 0.0:  # NaN too
            seconds = 0.0
        seconds = min(seconds, RETRY_AFTER_CAP_S)
        self.blocked_until = max(self.blocked_until, time.monotonic() + seconds)
        self.banned = self.banned or banned


_KLINE_ROW = list[tuple[int, str, str, str, str, str, int, str, int, str, str, Any]]
_klines_decoder = msgspec.json.Decoder(_KLINE_ROW)


class RestClient:
    """REST calls for all three markets, through one aiohttp session.

    `clock_rate` is how fast the servers' clocks run against the local one: 1 for Binance, the
    speed of a simulator that runs fast (its exchange time would otherwise run away from the
    clocks, and every frame would look implausible).
    """

    def __init__(
        self,
        endpoints: dict[Market, Endpoints],
        *,
        timeout_s: float = 10.0,
        retries: int = 5,
        warn: Callable[[str], None] | None = None,
        clock_rate: float = 1.0,
    ) -> None:
        self.endpoints = endpoints
        self.warn = warn or log.warning  # where rate-limit waits are reported
        self.retries = retries
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        pools: dict[str, WeightLimiter] = {}
        self.limiters: dict[Market, WeightLimiter] = {}
        for market, spec in MARKETS.items():
            pool = pools.setdefault(
                spec.weight_pool,
                WeightLimiter(spec.weight_budget, clock=ExchangeClock(rate=clock_rate)),
            )
            self.limiters[market] = pool
        # One clock per market, not one for all: Binance's markets share a clock, but the
        # endpoints of a mirror or a simulator need not.
        self._clocks = {market: ExchangeClock(rate=clock_rate) for market in Market}
        self.rejected_rows = 0  # kline rows dropped as impossible, over all calls
        # The latest failure to reach a server (None once one answered), and when that request
        # is tried again (local monotonic seconds): a face says the exchange cannot be reached
        # from the first refused attempt, not after the retries are spent.
        self.unreachable: str | None = None
        self.retry_at: float | None = None
        self._rejected_streams: set[StreamKey] = set()  # told once each
        # The largest |premium index| a premium kline row may hold (the config's premium_bound).
        self.premium_bound = DEFAULT_PREMIUM_BOUND

    def clock(self, market: Market) -> ExchangeClock:
        """The market's exchange clock, set by every `server_time` answer (unknown before)."""
        return self._clocks[market]

    def set_clock_rate(self, rate: float) -> None:
        """How fast the servers' clocks run against the local one, for a client built before it
        was known (a simulator started later); ValueError unless positive and finite."""
        rate = checked_rate(rate)
        for clock in (
            *self._clocks.values(),
            *(limiter.clock for limiter in self.limiters.values()),
        ):
            clock.rate = rate

    async def close(self) -> None:
        """Close the HTTP session (a later call opens a new one)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _get(self, market: Market, path: str, params: dict[str, Any], weight: int) -> bytes:
        """GET with the weight budget, Retry-After and retries; returns the body of a 200."""
        limiter = self.limiters[market]
        url = self.endpoints[market].rest.rstrip("/") + path
        what = f"{market.value} {path}"
        for attempt in range(self.retries + 1):
            await limiter.acquire(weight)
            try:
                async with self._http().get(url, params=params) as resp:
                    body = await resp.read()
                    used = resp.headers.get("X-MBX-USED-WEIGHT-1M")
                    if used is not None and used.isascii() and used.isdigit():
                        limiter.note_used(int(used))
                    status = resp.status
                    retry_after = retry_after_s(resp.headers.get("Retry-After"))
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                reason = safe_text(str(exc) or type(exc).__name__)
                self.unreachable = f"{what}: {reason}"
                if attempt == self.retries:
                    self.retry_at = None
                    raise RestError(f"{what}: {reason}") from None
                delay = _backoff(attempt)
                self.retry_at = time.monotonic() + delay
                await asyncio.sleep(delay)
                continue
            self.unreachable = self.retry_at = None
            if status == 200:
                return body
            code, msg = _error_of(body)
            if status in (429, 418):
                wait = retry_after if retry_after is not None else _DEFAULT_RETRY_AFTER_S
                limiter.block(wait, banned=status == 418)
                verdict = "banned" if status == 418 else "rate-limited"
                self.warn(
                    f"{what}: HTTP {status}, {verdict}; REST paused {wait:.0f} s (Retry-After)"
                )
                if attempt == self.retries:
                    raise RestError(f"{what}: HTTP {status} {msg}", status=status, code=code)
                continue
            if status >= 500:
                if attempt == self.retries:
                    raise RestError(f"{what}: HTTP {status} {msg}", status=status, code=code)
                await asyncio.sleep(_backoff(attempt))
                continue
            raise RestError(f"{what}: HTTP {status} {msg}".rstrip(), status=status, code=code)
        raise AssertionError("unreachable")

    async def server_time(self, market: Market) -> int:
        """The exchange's current time in ms. Sets the market's clock and its weight budget's.

        A time before 2017 or after 2100 is a RestError: no exchange can answer it, and the clock
        every frame is checked against must not take it.
        """
        body = await self._get(market, MARKETS[market].time_path, {}, 1)
        try:
            server_ms = int(msgspec.json.decode(body)["serverTime"])
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, OverflowError):
            raise RestError(f"{market.value} time: unexpected answer") from None
        if not self._clocks[market].note(server_ms):
            raise RestError(f"{market.value} time: impossible server time {server_ms}")
        self.limiters[market].note_server_time(server_ms)
        return server_ms

    async def exchange_info(self, market: Market) -> dict[str, SymbolInfo]:
        """Every symbol of the market, keyed by name.

        A name with characters no terminal should print (controls, escapes, bidi overrides) is
        left out: it cannot be a real symbol, and names are shown to the user.
        """
        spec = MARKETS[market]
        body = await self._get(market, spec.exchange_info_path, {}, spec.exchange_info_weight)
        try:
            raw = msgspec.json.decode(body)["symbols"]
            symbols: dict[str, SymbolInfo] = {}
            for item in raw:
                name = item["symbol"]
                if not isinstance(name, str) or safe_text(name, 100) != name:
                    continue
                status = item.get("status") or item.get("contractStatus") or ""
                size = item.get("contractSize")
                symbols[name] = SymbolInfo(
                    name,
                    safe_text(status, 40),
                    float(size) if size is not None else None,
                    _text_or_none(item.get("pair")),
                    _text_or_none(item.get("contractType")),
                )
        except (
            msgspec.DecodeError,
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
            OverflowError,
        ):
            raise RestError(f"{market.value} exchangeInfo: unexpected answer") from None
        return symbols

    async def klines(
        self,
        market: Market,
        symbol: str,
        interval: Interval,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
        kind: Kind = Kind.TRADE,
    ) -> list[Candle]:
        """One klines call of `kind` (`symbol` is the pair for index and continuous kinds), as
        the exchange answers it (the last row may still be forming).

        Rows that cannot be real are left out and counted in `rejected_rows`: impossible values
        or times for the kind (`wire.implausible_candle`), an open time outside
        `start_ms`..`end_ms` or after the exchange's clock.
        """
        rows = await self._kline_rows(market, symbol, interval, kind, start_ms, end_ms, limit)
        return self._plausible(market, symbol, interval, kind, rows, start_ms, end_ms)

    async def _kline_rows(
        self,
        market: Market,
        symbol: str,
        interval: Interval,
        kind: Kind,
        start_ms: int | None,
        end_ms: int | None,
        limit: int | None,
    ) -> list[tuple[Any, ...]]:
        """The rows of one klines call, as typed tuples; a RestError if the body is not rows.

        Every kind's endpoint has the trade klines' weight table and row shape
        (docs/binance-kline-kinds.md, 1b); only the path and the naming parameters differ.
        """
        if market not in kind.markets():
            raise RestError(f"{market.value} has no {kind.value} klines")
        spec = MARKETS[market]
        limit = spec.klines_limit if limit is None else min(limit, spec.klines_limit)
        params: dict[str, Any] = {
            **kind_params(kind, symbol),
            "interval": interval.value,
            "limit": limit,
        }
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        path = spec.kind_klines_path(kind)
        body = await self._get(market, path, params, kline_weight(market, limit))
        try:
            return _klines_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise RestError(
                f"{market.value} {_what(kind)} {symbol} {interval}: malformed answer"
            ) from None

    def _plausible(
        self,
        market: Market,
        symbol: str,
        interval: Interval,
        kind: Kind,
        rows: list[tuple[Any, ...]],
        start_ms: int | None,
        end_ms: int | None,
    ) -> list[Candle]:
        """The rows that can be real, as candles; the others are counted and told once per
        stream."""
        now = self._clocks[market].now_ms()
        # The clock runs behind the server by the time server times take to arrive: a margin.
        latest = None if now is None else now + CLOCK_TOLERANCE_MS
        lo = -math.inf if start_ms is None else start_ms
        hi = math.inf if end_ms is None else end_ms
        out: list[Candle] = []
        first_reason = None
        for row in rows:
            candle = _candle_of(row)
            if candle is None:
                reason: str | None = "a value that is not a number"
            elif not lo <= candle.open_time <= hi:
                reason = "an open time outside the range asked"
            elif latest is not None and candle.open_time > latest:
                reason = "an open time after the exchange's clock"
            else:
                reason = implausible_candle(candle, interval, kind, self.premium_bound)
                if reason is None:
                    out.append(candle)
                    continue
            self.rejected_rows += 1
            first_reason = first_reason or reason
        stream = StreamKey(market, symbol, interval, kind)
        if first_reason is not None and stream not in self._rejected_streams:
            self._rejected_streams.add(stream)
            self.warn(
                f"{stream}: {len(rows) - len(out)} REST kline rows dropped as impossible "
                f"({first_reason})"
            )
        return out

    async def closed_klines(
        self,
        market: Market,
        symbol: str,
        interval: Interval,
        first_open: int,
        last_open: int,
        *,
        kind: Kind = Kind.TRADE,
    ) -> tuple[list[Candle], int]:
        """Every closed candle of `kind` opening from `first_open` to `last_open`, paging as
        needed, and the exchange time they were asked at.

        Pages hold the market's maximum rows and span no more; COIN-M requests span at most its
        200-day window
        (for every kind: the premium page does not state it, and it costs nothing). Rows still
        forming at the exchange's current time are left out, and so are rows that cannot be
        real (see `klines`). A full page with not one real row is a RestError, since paging
        cannot go on from it and the rest of the range would look absent.
        """
        spec = MARKETS[market]
        server_now = await self.server_time(market)
        out: list[Candle] = []
        start = first_open
        while start <= last_open:
            # A page never spans more rows than it holds: given both ends, COIN-M answers the
            # newest rows before endTime, which would skip the start of a longer range.
            end = min(last_open, interval.shift(start, spec.klines_limit - 1))
            if spec.max_window_ms is not None:
                end = min(end, start + spec.max_window_ms - 1)
            rows = await self._kline_rows(
                market, symbol, interval, kind, start, end, spec.klines_limit
            )
            page = self._plausible(market, symbol, interval, kind, rows, start, end)
            out.extend(c for c in page if c.close_time < server_now)
            # Whether the page was full is told by the rows received, not by the rows kept: one
            # dropped row must not end the paging and leave the rest of the range unasked.
            if len(rows) >= spec.klines_limit:
                if not page:
                    raise RestError(
                        f"{market.value} {_what(kind)} {symbol} {interval}: "
                        "a full page of impossible rows"
                    )
                start = interval.next_open(max(c.open_time for c in page))
            elif end < last_open:  # a short page ends this window; COIN-M's next one follows
                start = interval.next_open(interval.open_time_at(end))
            else:
                break
        return out, server_now


def _what(kind: Kind) -> str:
    """A kind's klines in an error message: `klines`, `mark klines`."""
    return "klines" if kind is Kind.TRADE else f"{kind.value} klines"


def _text_or_none(value: Any) -> str | None:
    """An exchangeInfo text field, made safe to print, or None when absent or not text."""
    return safe_text(value, 40) if isinstance(value, str) else None


def retry_after_s(value: str | None, *, cap_s: float = RETRY_AFTER_CAP_S) -> float | None:
    """Seconds a `Retry-After` header asks to wait, within 0..`cap_s`; None if absent or unreadable.

    Reads delta-seconds (decimals too, as some servers send) and HTTP dates (RFC 9110). Negative
    values count as 0; huge and infinite ones as `cap_s`; NaN and garbage as absent, so the
    caller's default applies.
    """
    if value is None:
        return None
    text = value.strip()
    seconds: float | None
    try:
        seconds = float(text)
    except ValueError:
        seconds = _seconds_until_http_date(text)
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), cap_s)


def _seconds_until_http_date(text: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(text)
        return when.timestamp() - time.time()  # a date without a zone is taken as UTC
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _candle_of(row: tuple[Any, ...]) -> Candle | None:
    """A klines row as a Candle, or None if a price or volume is not a number."""
    try:
        return Candle(
            row[0],
            row[6],
            float(row[1]),
            float(row[2]),
            float(row[3]),
            float(row[4]),
            float(row[5]),
            float(row[7]),
            float(row[9]),
            float(row[10]),
            row[8],
        )
    except ValueError:
        return None


def _error_of(body: bytes) -> tuple[int | None, str]:
    """The code and message of a Binance error body; the message is made safe to print."""
    try:
        obj = msgspec.json.decode(body)
        return int(obj.get("code")), safe_text(obj.get("msg", ""), 200)
    except Exception:  # noqa: BLE001 - an HTML page, an empty body, any shape: the status alone
        return None, ""


def _backoff(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    return random.uniform(0, min(cap, base * 2**attempt))

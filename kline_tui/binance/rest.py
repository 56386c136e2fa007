"""Binance REST: server time, exchangeInfo and klines, within each market's request-weight budget.

One `WeightLimiter` per budget (spot has its own; USD-M and COIN-M share one since mid-2026). It
reads `X-MBX-USED-WEIGHT-1M` from every answer, holds requests back before the budget runs out,
and honours `Retry-After` on 429 and 418 (a 418 is a ban: REST for that budget stops until it
ends). 5xx answers and timeouts are retried with capped, jittered backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec

from kline_tui.binance.markets import MARKETS, Endpoints, kline_weight
from kline_tui.model import Candle, Interval, Market

__all__ = ["RestClient", "RestError", "WeightLimiter", "SymbolInfo"]

log = logging.getLogger(__name__)

_MINUTE_MS = 60_000


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

    @property
    def tradable(self) -> bool:
        return self.status == "TRADING"


class WeightLimiter:
    """Keeps one request-weight budget, shared by every market that draws on it."""

    def __init__(self, budget: int, headroom: float = 0.9) -> None:
        self.budget = budget
        self.limit = int(budget * headroom)
        self.used = 0  # as last reported by the exchange for the current minute
        self.minute = -1  # the exchange minute `used` belongs to (server ms // 60000)
        self.blocked_until = 0.0  # monotonic time before which no request may go out
        self.banned = False  # the block comes from a 418
        self.server_offset_ms: int | None = None  # server time minus local monotonic ms
        self._lock = asyncio.Lock()

    def server_now_ms(self) -> int | None:
        if self.server_offset_ms is None:
            return None
        return int(time.monotonic() * 1000) + self.server_offset_ms

    def note_server_time(self, server_ms: int) -> None:
        """Remember how the exchange clock relates to the local monotonic one."""
        self.server_offset_ms = server_ms - int(time.monotonic() * 1000)

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
        self.used = used
        server_now = self.server_now_ms()
        if server_now is not None:
            self.minute = server_now // _MINUTE_MS

    def block(self, seconds: float, banned: bool) -> None:
        self.blocked_until = max(self.blocked_until, time.monotonic() + seconds)
        self.banned = self.banned or banned


_KLINE_ROW = list[tuple[int, str, str, str, str, str, int, str, int, str, str, Any]]
_klines_decoder = msgspec.json.Decoder(_KLINE_ROW)


class RestClient:
    """REST calls for all three markets, through one aiohttp session."""

    def __init__(
        self,
        endpoints: dict[Market, Endpoints],
        *,
        timeout_s: float = 10.0,
        retries: int = 5,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.warn = warn or log.warning  # where rate-limit waits are reported
        self.retries = retries
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        pools: dict[str, WeightLimiter] = {}
        self.limiters: dict[Market, WeightLimiter] = {}
        for market, spec in MARKETS.items():
            pool = pools.setdefault(spec.weight_pool, WeightLimiter(spec.weight_budget))
            self.limiters[market] = pool

    async def close(self) -> None:
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
                    if used is not None and used.isdigit():
                        limiter.note_used(int(used))
                    status = resp.status
                    retry_after = _retry_after(resp.headers.get("Retry-After"))
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
                if attempt == self.retries:
                    raise RestError(f"{what}: {reason}") from None
                await asyncio.sleep(_backoff(attempt))
                continue
            if status == 200:
                return body
            code, msg = _error_of(body)
            if status in (429, 418):
                wait = retry_after if retry_after is not None else 60.0
                limiter.block(wait, banned=status == 418)
                verdict = "banned" if status == 418 else "rate-limited"
                self.warn(f"{what}: HTTP {status}, {verdict}; REST paused {wait:.0f} s (Retry-After)")
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
        """The exchange's current time in ms; also calibrates the weight limiter's minute."""
        body = await self._get(market, MARKETS[market].time_path, {}, 1)
        try:
            server_ms = int(msgspec.json.decode(body)["serverTime"])
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            raise RestError(f"{market.value} time: unexpected answer") from None
        self.limiters[market].note_server_time(server_ms)
        return server_ms

    async def exchange_info(self, market: Market) -> dict[str, SymbolInfo]:
        """Every symbol of the market, keyed by name."""
        spec = MARKETS[market]
        body = await self._get(market, spec.exchange_info_path, {}, spec.exchange_info_weight)
        try:
            raw = msgspec.json.decode(body)["symbols"]
            symbols: dict[str, SymbolInfo] = {}
            for item in raw:
                status = item.get("status") or item.get("contractStatus") or ""
                size = item.get("contractSize")
                symbols[item["symbol"]] = SymbolInfo(
                    item["symbol"], status, float(size) if size is not None else None
                )
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
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
    ) -> list[Candle]:
        """One klines call, as the exchange answers it (the last row may still be forming)."""
        spec = MARKETS[market]
        limit = spec.klines_limit if limit is None else min(limit, spec.klines_limit)
        params: dict[str, Any] = {"symbol": symbol, "interval": interval.value, "limit": limit}
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        body = await self._get(market, spec.klines_path, params, kline_weight(market, limit))
        try:
            rows = _klines_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise RestError(f"{market.value} klines {symbol} {interval}: malformed answer") from None
        return [
            Candle(
                r[0], r[6], float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]),
                float(r[7]), float(r[9]), float(r[10]), r[8],
            )
            for r in rows
        ]

    async def closed_klines(
        self, market: Market, symbol: str, interval: Interval, first_open: int, last_open: int
    ) -> tuple[list[Candle], int]:
        """Every closed candle opening from `first_open` to `last_open`, paging as needed, and the
        exchange time they were asked at.

        Pages hold the market's maximum rows; COIN-M requests span at most its 200-day window.
        Rows still forming at the exchange's current time are left out.
        """
        spec = MARKETS[market]
        server_now = await self.server_time(market)
        out: list[Candle] = []
        start = first_open
        while start <= last_open:
            end = last_open
            if spec.max_window_ms is not None:
                end = min(end, start + spec.max_window_ms - 1)
            page = await self.klines(
                market, symbol, interval, start_ms=start, end_ms=end, limit=spec.klines_limit
            )
            page = [c for c in page if start <= c.open_time <= end]
            out.extend(c for c in page if c.close_time < server_now)
            if len(page) == spec.klines_limit:
                start = interval.next_open(page[-1].open_time)
            elif end < last_open:  # a short page ends this window; COIN-M's next one follows
                start = interval.next_open(interval.open_time_at(end))
            else:
                break
        return out, server_now


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _error_of(body: bytes) -> tuple[int | None, str]:
    try:
        obj = msgspec.json.decode(body)
        return int(obj.get("code")), str(obj.get("msg", ""))
    except Exception:  # an HTML error page, an empty body: report the status alone
        return None, ""


def _backoff(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    return random.uniform(0, min(cap, base * 2**attempt))

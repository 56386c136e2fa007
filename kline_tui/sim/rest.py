"""The REST side of one simulated market: time, exchangeInfo and klines, with request weights.

Futures markets also serve the other kinds of klines (`KIND_PATHS`): continuous contract
(`pair`, `contractType`), mark price (`symbol`), index price (`pair`) and premium index
(`symbol`) klines, with the klines weights and limits. On COIN-M the continuous, mark and index
paths follow Binance's documented window rule: `endTime - startTime` at most 200 days, a missing
end is `startTime` + 200 days (capped at now), a missing start `endTime` - 200 days, and the
*newest* `limit` rows of that window are returned. Every other klines path (COIN-M premium, whose
page states no rule, included) pages forward from `startTime` as `/klines` does.

Weight is counted per pool per real wall-clock minute (Binance resets at the minute), so USD-M
and COIN-M, which share the futures pool, spend one budget. Over budget a call gets HTTP 429
with Retry-After; a client that keeps calling through the penalty gets HTTP 418, banned.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from kline_tui.binance.markets import MARKETS, kline_weight
from kline_tui.model import Interval, Kind, Market
from kline_tui.sim.candles import final_for, forming_for, kind_source
from kline_tui.sim.clock import SimClock
from kline_tui.sim.faults import Faults
from kline_tui.sim.poison import poison_row
from kline_tui.sim.stats import MarketStats
from kline_tui.sim.universe import CONTRACT_TYPES, SymbolInfo

__all__ = ["KIND_PATHS", "MarketRest", "WeightPool", "klines_open_times", "window_open_times"]

KIND_PATHS = {
    "continuousKlines": "pair",
    "markPriceKlines": "symbol",
    "indexPriceKlines": "pair",
    "premiumIndexKlines": "symbol",
}
"""The futures klines paths besides `/klines`, with the parameter each is keyed by."""
_KLINE_PATHS = frozenset(("klines", *KIND_PATHS))
# The COIN-M paths whose pages document the newest-rows window rule.
_NEWEST_FIRST = frozenset(("continuousKlines", "markPriceKlines", "indexPriceKlines"))

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
_JSON = "application/json;charset=UTF-8"
_encode = msgspec.json.encode


class WeightPool:
    """One request-weight budget per real minute, shared by the markets of one pool.

    After the budget is spent, each further call in the same minute is a 429; more than
    `ban_after` of them ban the pool for `ban_s` seconds (HTTP 418).
    """

    def __init__(self, budget: int, ban_after: int = 5, ban_s: float = 120.0) -> None:
        self.budget = budget
        self.ban_after = ban_after
        self.ban_s = ban_s
        self._minute = -1
        self._used = 0
        self._over = 0
        self.banned_until = 0.0  # wall time (s)

    @property
    def used(self) -> int:
        """Weight used in the current minute."""
        self._roll(time.time())
        return self._used

    def _roll(self, now: float) -> None:
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._used, self._over = minute, 0, 0

    def charge(self, weight: int) -> tuple[int, int, int | None]:
        """Spend `weight`: (HTTP status 200/429/418, used weight, Retry-After seconds or None)."""
        now = time.time()
        self._roll(now)
        if now < self.banned_until:
            return 418, self._used, math.ceil(self.banned_until - now)
        self._used += weight
        if self._used <= self.budget:
            return 200, self._used, None
        self._over += 1
        if self._over > self.ban_after:
            self.banned_until = now + self.ban_s
            return 418, self._used, math.ceil(self.ban_s)
        return 429, self._used, max(1, math.ceil(60 - now % 60))


def klines_open_times(
    interval: Interval, start: int | None, end: int | None, limit: int, now_ms: int, first_open: int
) -> list[int]:
    """Open times a klines call returns, ascending, as Binance picks them.

    startTime only: the first `limit` opening at or after it; endTime only: the last `limit`
    opening at or before it; both: the first `limit` in the range; neither: the latest `limit`.
    Never a candle opening after `now_ms` (the forming one is the last), nor before `first_open`.
    """
    last = interval.open_time_at(now_ms)
    if end is not None:
        last = min(last, interval.open_time_at(end))
    floor = interval.open_time_at(first_open)
    times: list[int] = []
    if start is not None:
        t = interval.open_time_at(start)
        if t < start:
            t = interval.next_open(t)
        t = max(t, floor)
        while t <= last and len(times) < limit:
            times.append(t)
            t = interval.next_open(t)
        return times
    t = last
    while t >= floor and len(times) < limit:
        times.append(t)
        t = interval.prev_open(t)
    times.reverse()
    return times


def window_open_times(
    interval: Interval,
    start: int | None,
    end: int | None,
    limit: int,
    now_ms: int,
    first_open: int,
    window_ms: int,
) -> list[int]:
    """Open times a COIN-M continuous, mark or index klines call returns, ascending.

    Binance's documented rule: with only `start`, the end is `start + window_ms` (capped at
    now); with only `end`, the start is `end - window_ms`; of the candles opening in that
    range, the newest `limit` are returned. Neither: the latest `limit`.
    """
    if start is not None and end is None:
        end = min(start + window_ms, now_ms)
    elif end is not None and start is None:
        start = end - window_ms
    if start is not None:
        first = interval.open_time_at(start)
        if first < start:
            first = interval.next_open(first)
        first_open = max(first_open, first)
    return klines_open_times(interval, None, end, limit, now_ms, first_open)


class _BadRequest(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _int_param(request: web.Request, name: str) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return None
    if not text.isdigit() or len(text) > 20:
        raise _BadRequest(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        )
    return int(text)


class MarketRest:
    """Serves the REST endpoints of one market."""

    def __init__(
        self,
        market: Market,
        clock: SimClock,
        faults: Faults,
        stats: MarketStats,
        symbols: dict[str, SymbolInfo],
        pool: WeightPool,
        rng: random.Random | None = None,
    ) -> None:
        self.market = market
        self.rng = rng or random.Random()  # fault dice (poisoned rows), never candle values
        self.spec = MARKETS[market]
        self.clock = clock
        self.faults = faults
        self.stats = stats
        self.symbols = symbols
        self.pool = pool
        self._symbols_json: msgspec.Raw | None = None

    def add_routes(self, app: web.Application) -> None:
        """Register the market's REST paths on `app`."""
        p = self.spec.rest_prefix
        app.router.add_get(f"{p}/ping", self._wrap(lambda r: 1, self._ping))
        app.router.add_get(f"{p}/time", self._wrap(lambda r: 1, self._time))
        app.router.add_get(
            f"{p}/exchangeInfo",
            self._wrap(lambda r: self.spec.exchange_info_weight, self._exchange_info),
        )
        app.router.add_get(f"{p}/klines", self._wrap(self._klines_weight, self._klines))
        if self.market is not Market.SPOT:
            for name in KIND_PATHS:
                app.router.add_get(
                    f"{p}/{name}", self._wrap(self._klines_weight, self._kind_klines)
                )

    def _wrap(
        self,
        weight: Callable[[web.Request], int],
        body: Callable[[web.Request], Awaitable[web.Response]],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            self.stats.rest_calls += 1
            path = request.path.rsplit("/", 1)[-1]
            if path in _KLINE_PATHS:
                self.stats.rest_kline_calls += 1
                key = KIND_PATHS.get(path, "symbol")
                self.stats.kline_calls_by_symbol[request.query.get(key, "")[:40]] += 1
            faults = self.faults[self.market]
            if faults.rest_delay_s:
                await asyncio.sleep(faults.rest_delay_s)
            failure = faults.take_rest_failure()
            if failure is not None:
                return self._failure(failure.status, self.pool.used, failure.retry_after)
            status, used, retry_after = self.pool.charge(weight(request))
            self.stats.max_used_weight = max(self.stats.max_used_weight, used)
            if status != 200:
                return self._failure(status, used, retry_after)
            try:
                response = await body(request)
            except _BadRequest as err:
                response = _json(
                    {"code": err.code, "msg": faults.with_hostile_text(err.msg)}, status=400
                )
            response.headers[WEIGHT_HEADER] = str(used)
            return response

        return handler

    def _failure(self, status: int, used: int, retry_after: int | None) -> web.Response:
        headers = {WEIGHT_HEADER: str(used)}
        if status == 429:
            self.stats.rest_429 += 1
            code, msg = (
                -1003,
                f"Too many requests; current limit of IP(127.0.0.1) request weight is "
                f"{self.pool.budget} per 1 MINUTE. Please use WebSocket Streams for live updates "
                "to avoid polling the API.",
            )
        elif status == 418:
            self.stats.rest_418 += 1
            until = int((time.time() + (retry_after or 1)) * 1000)
            code, msg = (
                -1003,
                f"Way too much request weight used; IP banned until {until}. "
                "Please use WebSocket Streams for live updates to avoid bans.",
            )
        elif status >= 500:
            code, msg = -1001, "Internal error; unable to process your request. Please try again."
        else:
            code, msg = -1000, "An unknown error occurred while processing the request."
        if status in (418, 429):
            headers["Retry-After"] = str(retry_after if retry_after is not None else 1)
        body = {"code": code, "msg": self.faults[self.market].with_hostile_text(msg)}
        return _json(body, status=status, headers=headers)

    async def _ping(self, request: web.Request) -> web.Response:
        return _json({})

    async def _time(self, request: web.Request) -> web.Response:
        return _json({"serverTime": self.clock.now_ms()})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        if self._symbols_json is None:
            # ~2000 symbols: encode once, splice into every answer.
            self._symbols_json = msgspec.Raw(
                _encode([_symbol_entry(i) for i in self.symbols.values()])
            )
        body: dict = {"timezone": "UTC", "serverTime": self.clock.now_ms()}
        if self.market is Market.USDM:
            body["futuresType"] = "U_MARGINED"
        body["rateLimits"] = _rate_limits(self.market)
        body["exchangeFilters"] = []
        body["symbols"] = self._symbols_json
        return _json(body)

    def _klines_weight(self, request: web.Request) -> int:
        try:
            limit = int(request.query.get("limit", 500))
        except ValueError:
            limit = 500
        return kline_weight(self.market, limit)

    async def _klines(self, request: web.Request) -> web.Response:
        symbol = _mandatory(request, "symbol")
        interval_text = _mandatory(request, "interval")
        info = self.symbols.get(symbol)
        if info is None:
            raise _BadRequest(-1121, "Invalid symbol.")
        interval = self._interval(interval_text)
        return self._rows(request, symbol, interval, Kind.TRADE, info, newest_first=False)

    async def _kind_klines(self, request: web.Request) -> web.Response:
        """continuousKlines, markPriceKlines, indexPriceKlines and premiumIndexKlines."""
        path = request.path.rsplit("/", 1)[-1]
        param = KIND_PATHS[path]
        key = _mandatory(request, param)
        if path == "continuousKlines":
            contract_type = _mandatory(request, "contractType")
            if contract_type not in CONTRACT_TYPES:
                raise _BadRequest(
                    -1100,
                    "Illegal characters found in parameter 'contractType'; legal range is "
                    f"'{', '.join(CONTRACT_TYPES)}'.",
                )
            kind = Kind(contract_type.lower())
        else:
            kind = {
                "markPriceKlines": Kind.MARK,
                "indexPriceKlines": Kind.INDEX,
                "premiumIndexKlines": Kind.PREMIUM,
            }[path]
        interval_text = _mandatory(request, "interval")
        source = kind_source(self.market, key, kind)
        if source is None or source.symbol not in self.symbols:
            raise _BadRequest(-1121, "Invalid symbol.")
        interval = self._interval(interval_text)
        newest = self.market is Market.COINM and path in _NEWEST_FIRST
        return self._rows(request, key, interval, kind, source, newest_first=newest)

    def _interval(self, text: str) -> Interval:
        try:
            interval = Interval(text)
        except ValueError:
            raise _BadRequest(-1120, "Invalid interval.") from None
        if interval not in self.market.intervals:
            raise _BadRequest(-1120, "Invalid interval.")
        return interval

    def _rows(
        self,
        request: web.Request,
        symbol: str,
        interval: Interval,
        kind: Kind,
        source: SymbolInfo,
        newest_first: bool,
    ) -> web.Response:
        """The klines answer for one series: `symbol` is its key, `source` the contract it
        follows (its onboard date is the first candle served)."""
        limit = _int_param(request, "limit")
        limit = 500 if limit is None else limit
        if not 1 <= limit <= self.spec.klines_limit:
            raise _BadRequest(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = _int_param(request, "startTime"), _int_param(request, "endTime")
        window = self.spec.max_window_ms
        if start is not None and end is not None:
            if start > end:
                raise _BadRequest(-1023, "Start time is greater than end time.")
            if window is not None and end - start > window:
                raise _BadRequest(-1127, "More than 200 days between startTime and endTime.")
        now = self.clock.now_ms()
        current = interval.open_time_at(now)
        if newest_first and window is not None:
            times = window_open_times(interval, start, end, limit, now, source.onboard_date, window)
        else:
            times = klines_open_times(interval, start, end, limit, now, source.onboard_date)
        rows = []
        for t in times:
            c = (
                forming_for(self.market, symbol, interval, t, now, kind)
                if t == current
                else final_for(self.market, symbol, interval, t, kind)
            )
            rows.append([c.t, c.o, c.h, c.l, c.c, c.v, c.T, c.q, c.n, c.V, c.Q, "0"])
        return _json(self._poisoned(rows, symbol, interval, now, kind))

    def _poisoned(
        self, rows: list[list], symbol: str, interval: Interval, now: int, kind: Kind
    ) -> list[list]:
        """`rows` with impossible rows mixed in at random places, when that switch is on."""
        poison = self.faults[self.market].rest_poison
        if poison is None or not poison.applies(symbol):
            return rows
        bad = [
            poison_row(poison.next_kind(), self.market, symbol, interval, now, self.rng, kind)
            for _ in range(sum(poison.count(self.rng.random()) for _ in range(max(1, len(rows)))))
        ]
        mixed = list(rows)
        for row in bad:
            mixed.insert(self.rng.randint(0, len(mixed)), row)
        self.stats.poison_rows_sent += len(bad)
        return mixed


def _mandatory(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if not value:
        raise _BadRequest(
            -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
        )
    return value


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_encode(body), status=status, headers=headers, content_type="application/json"
    )


def _rate_limits(market: Market) -> list[dict]:
    spec = MARKETS[market]
    limits = [
        {
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": "MINUTE",
            "intervalNum": 1,
            "limit": spec.weight_budget,
        }
    ]
    if market is Market.SPOT:
        limits += [
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            {
                "rateLimitType": "RAW_REQUESTS",
                "interval": "MINUTE",
                "intervalNum": 5,
                "limit": 61000,
            },
        ]
    else:
        limits += [
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ]
    return limits


def _filters(info: SymbolInfo) -> list[dict]:
    return [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": info.tick_size,
            "maxPrice": "10000000",
            "tickSize": info.tick_size,
        },
        {
            "filterType": "LOT_SIZE",
            "minQty": info.step_size,
            "maxQty": "100000000",
            "stepSize": info.step_size,
        },
    ]


def _symbol_entry(info: SymbolInfo) -> dict:
    """One exchangeInfo symbol, with the fields each market's real answer carries."""
    if info.market is Market.SPOT:
        return {
            "symbol": info.symbol,
            "status": info.status,
            "baseAsset": info.base_asset,
            "baseAssetPrecision": 8,
            "quoteAsset": info.quote_asset,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "orderTypes": [
                "LIMIT",
                "LIMIT_MAKER",
                "MARKET",
                "STOP_LOSS_LIMIT",
                "TAKE_PROFIT_LIMIT",
            ],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": _filters(info),
            "permissions": [],
            "permissionSets": [["SPOT"]],
        }
    entry: dict[str, object] = {
        "symbol": info.symbol,
        "pair": info.pair,
        "contractType": info.contract_type,
        "deliveryDate": info.delivery_date,
        "onboardDate": info.onboard_date,
    }
    if info.market is Market.COINM:
        entry |= {
            "contractStatus": info.status,
            "contractSize": info.contract_size,
            "marginAsset": info.base_asset,
        }
    else:
        entry |= {"status": info.status, "marginAsset": info.quote_asset}
    entry |= {
        "baseAsset": info.base_asset,
        "quoteAsset": info.quote_asset,
        "pricePrecision": info.price_decimals,
        "quantityPrecision": info.qty_decimals,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "filters": _filters(info),
        "orderTypes": [
            "LIMIT",
            "MARKET",
            "STOP",
            "STOP_MARKET",
            "TAKE_PROFIT",
            "TAKE_PROFIT_MARKET",
        ],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    }
    return entry

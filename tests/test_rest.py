"""REST against a hostile server on loopback: Retry-After, impossible rows and times, server text.

Each test starts its own aiohttp server on 127.0.0.1 and answers as a broken or hostile exchange
would; the client must stay bounded and keep every real row.
"""

from __future__ import annotations

import contextlib
import math
import time

import pytest
from aiohttp import web

from kline_tui.binance import rest as rest_api
from kline_tui.binance.markets import Endpoints
from kline_tui.binance.rest import RestClient, RestError
from kline_tui.model import Interval, Kind, Market

HOUR = 3600.0  # the longest a Retry-After is obeyed

M = 60_000
NOW = 1_764_028_800_000 + 30 * M + 12_345  # 2025-11-25 00:30:12.345 UTC, the server's time
T0 = 1_764_028_800_000  # 2025-11-25 00:00 UTC


def row(t, *, o="10", h="11", lo="9", c="10.5", v="1", close=None):
    """A klines row of a 1m candle opening at `t`."""
    close = t + M - 1 if close is None else close
    return [t, o, h, lo, c, v, close, "10", 3, "0.5", "5", "0"]


@contextlib.asynccontextmanager
async def serve(routes: dict[str, web.Response | object]):
    """A server on 127.0.0.1 (a free port) answering each path with a fixed answer: a Response,
    or a JSON value sent with 200. Yields a RestClient for every market pointed at it."""

    async def handle(request: web.Request) -> web.StreamResponse:
        answer = routes.get(request.path)
        if answer is None:
            return web.json_response({"code": -1, "msg": "no route"}, status=404)
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, web.StreamResponse):
            return answer
        return web.json_response(answer)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    warnings: list[str] = []
    rest = RestClient(
        {m: Endpoints("ws://unused", base) for m in Market}, retries=0, warn=warnings.append
    )
    rest.warnings = warnings
    try:
        yield rest
    finally:
        await rest.close()
        await runner.cleanup()


# -- Retry-After ---------------------------------------------------------------------------


async def test_a_huge_retry_after_blocks_rest_for_an_hour_at_most():
    answer = web.json_response(
        {"code": -1003, "msg": "Too many requests."},
        status=429,
        headers={"Retry-After": "999999999"},
    )
    async with serve({"/api/v3/klines": answer}) as rest:
        with pytest.raises(RestError, match="HTTP 429"):
            await rest.klines(Market.SPOT, "BTCUSDT", Interval.M1)
        blocked_for = rest.limiters[Market.SPOT].blocked_until - time.monotonic()
    assert HOUR - 60 < blocked_for <= HOUR
    assert "paused 3600 s" in rest.warnings[0]


@pytest.mark.parametrize(
    "value, seconds",
    [
        (None, None),
        ("", None),
        ("garbage", None),
        ("nan", None),
        ("120", 120.0),
        (" 1.5 ", 1.5),
        ("-30", 0.0),
        ("inf", HOUR),
        ("1e999", HOUR),
        ("999999999", HOUR),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: go now
        ("Fri, 31 Dec 2099 23:59:59 GMT", HOUR),
        ("Fri, 31 Dec 99999 23:59:59 GMT", None),
    ],
)
def test_retry_after_values(value, seconds):
    assert rest_api.RETRY_AFTER_CAP_S == HOUR
    assert rest_api.retry_after_s(value) == seconds


def test_retry_after_date_soon():
    soon = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    assert 100 < rest_api.retry_after_s(soon) <= 120


def test_a_block_never_exceeds_the_cap():
    limiter = RestClient({}).limiters[Market.SPOT]
    for seconds in (math.nan, -5.0, math.inf, 1e300):
        limiter.block(seconds, banned=False)
        assert limiter.blocked_until - time.monotonic() <= HOUR


# -- the exchange clock ----------------------------------------------------------------------


async def test_server_time_sets_the_markets_clock():
    async with serve({"/fapi/v1/time": {"serverTime": NOW}}) as rest:
        assert rest.clock(Market.USDM).now_ms() is None
        assert await rest.server_time(Market.USDM) == NOW
        now = rest.clock(Market.USDM).now_ms()
        assert NOW <= now < NOW + 2000
        # One clock per market: a mirror or simulator may serve each market with its own time.
        assert rest.clock(Market.COINM).now_ms() is None
        assert NOW <= rest.limiters[Market.USDM].server_now_ms() < NOW + 2000


@pytest.mark.parametrize("server_ms", [10**16, 0, -5, 1_000_000_000_000, 4_102_444_800_000, True])
async def test_an_impossible_server_time_moves_no_clock(server_ms):
    async with serve({"/api/v3/time": {"serverTime": server_ms}}) as rest:
        with pytest.raises(RestError, match="time"):
            await rest.server_time(Market.SPOT)
        assert rest.limiters[Market.SPOT].server_now_ms() is None
        assert rest.clock(Market.SPOT).now_ms() is None


@pytest.mark.parametrize("server_ms", [1.7e12, "1764028800000"])
async def test_a_server_time_as_float_or_string_is_read_as_before(server_ms):
    async with serve({"/api/v3/time": {"serverTime": server_ms}}) as rest:
        assert await rest.server_time(Market.SPOT) == int(server_ms)


def test_clock_carries_the_server_time_forward():
    from kline_tui.binance.clock import ExchangeClock

    local = [100.0]
    clock = ExchangeClock(local=lambda: local[0])
    assert clock.now_ms() is None and clock.age_s() is None
    assert clock.note(NOW)
    local[0] += 2.5
    assert clock.now_ms() == NOW + 2500 and clock.age_s() == 2.5
    # Impossible times are refused and leave the clock as it was.
    for bad in (0, 10**16, -1, 4_102_444_800_000, True):
        assert not clock.note(bad)
    assert clock.now_ms() == NOW + 2500 and clock.refused == 5
    fast = ExchangeClock(rate=60.0, local=lambda: local[0])  # a simulator at 60x
    fast.note(NOW)
    local[0] += 1.0
    assert fast.now_ms() == NOW + 60_000
    with pytest.raises(ValueError):
        ExchangeClock(rate=math.nan)


# -- impossible rows -------------------------------------------------------------------------


async def test_impossible_rows_are_dropped_and_counted():
    first, last = T0, T0 + 20 * M
    good = [row(T0 + i * M) for i in (0, 1, 2, 5, 6)]
    bad = [
        row(T0 + 3 * M + 7),  # not aligned to the minute
        row(T0 + 4 * M, close=T0 + 6 * M - 1),  # a close time that is not the interval's
        row(1_000_000 * M),  # 1971: before Binance existed
        row(T0 + 7 * M, lo="-1"),  # a negative low
        row(T0 + 8 * M, h="NaN"),  # not a number that can be a price
        row(T0 + 9 * M, v="1e999"),  # an infinite volume
        row(T0 + 40 * M),  # after the range asked
        row(T0 - 5 * M),  # before it
        [*row(T0 + 10 * M)[:8], 10**30 + 707, *row(T0 + 10 * M)[9:]],  # a count past Int64
    ]
    rows = sorted(good + bad, key=lambda r: r[0])
    async with serve({"/api/v3/time": {"serverTime": NOW}, "/api/v3/klines": rows}) as rest:
        candles, server_now = await rest.closed_klines(
            Market.SPOT, "BTCUSDT", Interval.M1, first, last
        )
        assert [c.open_time for c in candles] == [r[0] for r in good]
        assert server_now == NOW
        assert rest.rejected_rows == len(bad)
        assert len(rest.warnings) == 1 and "dropped as impossible" in rest.warnings[0]


@pytest.mark.parametrize("kind", [Kind.TRADE, Kind.PREMIUM])
async def test_a_polled_row_with_a_count_past_int64_is_dropped(kind):
    """The simulator's `huge_int` REST poison once put 10**30 in `n` of a premium row at a real
    open time: it was taken as the candle, the sink could not write it, and the dataset kept a
    hole the ledger believed filled. Also an open time past 2100 when no range bounds it."""

    def good(t):
        if kind is Kind.TRADE:
            return row(t)
        # A premium row: a signed index and "0" where the volumes would be.
        return [t, "0.0001", "0.0002", "-0.0001", "0.0001", "0", t + M - 1, "0", 3, "0", "0", "0"]

    rows = [
        good(T0 + 28 * M),
        [*good(T0 + 29 * M)[:8], 10**30 + 707, *good(T0 + 29 * M)[9:]],
        good(T0 + 29 * M),
        good(T0 + 30 * M),
    ]
    path = "/fapi/v1/premiumIndexKlines" if kind is Kind.PREMIUM else "/fapi/v1/klines"
    async with serve({"/fapi/v1/time": {"serverTime": NOW}, path: rows}) as rest:
        await rest.server_time(Market.USDM)
        candles = await rest.klines(Market.USDM, "BTCUSDT", Interval.M1, limit=4, kind=kind)
        assert [(c.open_time, c.trades) for c in candles] == [
            (T0 + 28 * M, 3),
            (T0 + 29 * M, 3),
            (T0 + 30 * M, 3),
        ]
        assert rest.rejected_rows == 1
    from kline_tui.binance.wire import implausible_candle_times

    far = Interval.M1.open_time_at(4_102_444_800_000 + 10 * M)
    assert implausible_candle_times(far, far + M - 1, Interval.M1) == "open time after 2100"


async def test_a_row_that_is_not_a_number_is_dropped_not_raised():
    rows = [row(T0), row(T0 + M, o="abc"), row(T0 + 2 * M)]
    async with serve({"/api/v3/time": {"serverTime": NOW}, "/api/v3/klines": rows}) as rest:
        candles, _ = await rest.closed_klines(Market.SPOT, "BTCUSDT", Interval.M1, T0, T0 + 5 * M)
        assert [c.open_time for c in candles] == [T0, T0 + 2 * M]
        assert rest.rejected_rows == 1


async def test_a_candle_after_the_exchange_clock_is_dropped():
    rows = [
        row(T0 + 29 * M),
        row(T0 + 30 * M),
        row(T0 + 2 * 24 * 60 * M),  # two days ahead
    ]
    async with serve({"/api/v3/time": {"serverTime": NOW}, "/api/v3/klines": rows}) as rest:
        await rest.server_time(Market.SPOT)
        candles = await rest.klines(Market.SPOT, "BTCUSDT", Interval.M1)
        assert [c.open_time for c in candles] == [T0 + 29 * M, T0 + 30 * M]  # 30: still forming
        assert rest.rejected_rows == 1


async def test_a_malformed_body_is_a_rest_error():
    async with serve({"/api/v3/klines": {"not": "rows"}}) as rest:
        with pytest.raises(RestError, match="malformed"):
            await rest.klines(Market.SPOT, "BTCUSDT", Interval.M1)


async def test_a_full_page_with_a_bad_row_keeps_paging():
    """Paging goes by the rows received: a dropped row must not end it and leave the rest of the
    range looking absent (the ledger would give those candles up)."""
    limit = 1000  # spot's rows per page
    bad_at = T0 + 500 * M

    def klines(request):
        start, end = int(request.query["startTime"]), int(request.query["endTime"])
        opens = list(range(start, end + 1, M))[:limit]
        return web.json_response([row(t, lo="-1") if t == bad_at else row(t) for t in opens])

    last = T0 + 1499 * M
    server_now = last + 5 * M
    routes = {"/api/v3/time": {"serverTime": server_now}, "/api/v3/klines": klines}
    async with serve(routes) as rest:
        candles, _ = await rest.closed_klines(Market.SPOT, "BTCUSDT", Interval.M1, T0, last)
    expected = [T0 + i * M for i in range(1500) if T0 + i * M != bad_at]
    assert [c.open_time for c in candles] == expected


# -- text from the server --------------------------------------------------------------------


async def test_server_error_messages_lose_control_characters():
    answer = web.json_response(
        {"code": -1121, "msg": "Invalid symbol.\x1b[2J\x1b]0;pwned\x07\u202e"}, status=400
    )
    async with serve({"/api/v3/klines": answer}) as rest:
        with pytest.raises(RestError) as caught:
            await rest.klines(Market.SPOT, "BTCUSDT", Interval.M1)
    message = str(caught.value)
    assert "Invalid symbol." in message and caught.value.code == -1121
    assert not any(ch in message for ch in "\x1b\x07\u202e")


async def test_exchange_info_leaves_out_names_a_terminal_would_obey():
    info = {
        "symbols": [
            {"symbol": "BTCUSDT", "status": "TRADING"},
            {"symbol": "EVIL\x1b[2J", "status": "TRADING"},
            {"symbol": "ETHUSDT", "status": "BREAK\x1b]0;x\x07"},
        ]
    }
    async with serve({"/api/v3/exchangeInfo": info}) as rest:
        symbols = await rest.exchange_info(Market.SPOT)
    assert sorted(symbols) == ["BTCUSDT", "ETHUSDT"]
    assert symbols["ETHUSDT"].status == "BREAK"

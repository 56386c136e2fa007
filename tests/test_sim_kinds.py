"""The simulator's kinds of klines (mark, index, premium, continuous contract) over loopback.

REST rows and WebSocket frames are compared with the pure candle functions (`candle_at`,
`forming_at` with `kind=`), the only source of truth a recorder test has.
"""

from __future__ import annotations

import itertools
import json
import time

import aiohttp
import pytest

from kline_tui.model import Kind, Market, StreamKey
from kline_tui.sim import Simulator, candle_at, forming_at, kind_source, stream_candle
from kline_tui.sim.universe import contract_symbol

MINUTE = 60_000
DAY = 86_400_000
# A frozen exchange clock 30 s into a minute of 2026-11-30: REST answers are exactly known.
FROZEN_AT = 1_796_000_000_000 - 1_796_000_000_000 % MINUTE + 30_000
FROZEN = {"speed": 0.0, "start_ms": FROZEN_AT, "extra_symbols": 5, "seed": 1}

# (market, path, query, the series it serves)
SERIES = [
    (
        Market.USDM,
        "/fapi/v1/continuousKlines",
        {"pair": "BTCUSDT", "contractType": "PERPETUAL"},
        StreamKey.parse("usdm:BTCUSDT:1m:perpetual"),
    ),
    (
        Market.USDM,
        "/fapi/v1/continuousKlines",
        {"pair": "BTCUSDT", "contractType": "CURRENT_QUARTER"},
        StreamKey.parse("usdm:BTCUSDT:1m:current_quarter"),
    ),
    (
        Market.USDM,
        "/fapi/v1/markPriceKlines",
        {"symbol": "ETHUSDT"},
        StreamKey.parse("usdm:ETHUSDT:1m:mark"),
    ),
    (
        Market.USDM,
        "/fapi/v1/indexPriceKlines",
        {"pair": "BTCUSDT"},
        StreamKey.parse("usdm:BTCUSDT:1m:index"),
    ),
    (
        Market.USDM,
        "/fapi/v1/premiumIndexKlines",
        {"symbol": "BTCUSDT"},
        StreamKey.parse("usdm:BTCUSDT:1m:premium"),
    ),
    (
        Market.COINM,
        "/dapi/v1/continuousKlines",
        {"pair": "BTCUSD", "contractType": "NEXT_QUARTER"},
        StreamKey.parse("coinm:BTCUSD:1m:next_quarter"),
    ),
    (
        Market.COINM,
        "/dapi/v1/markPriceKlines",
        {"symbol": "BTCUSD_PERP"},
        StreamKey.parse("coinm:BTCUSD_PERP:1m:mark"),
    ),
    (
        Market.COINM,
        "/dapi/v1/indexPriceKlines",
        {"pair": "ETHUSD"},
        StreamKey.parse("coinm:ETHUSD:1m:index"),
    ),
    (
        Market.COINM,
        "/dapi/v1/premiumIndexKlines",
        {"symbol": "BTCUSD_PERP"},
        StreamKey.parse("coinm:BTCUSD_PERP:1m:premium"),
    ),
]


def row_of(candle) -> list:
    c = candle
    return [c.t, c.o, c.h, c.l, c.c, c.v, c.T, c.q, c.n, c.V, c.Q, "0"]


async def get(session: aiohttp.ClientSession, sim: Simulator, market: Market, path: str, **query):
    """(status, JSON body, used-weight header) of one REST call."""
    params = {k: str(v) for k, v in query.items()}
    async with session.get(sim.endpoints[market].rest + path, params=params) as resp:
        return resp.status, await resp.json(), resp.headers.get("X-MBX-USED-WEIGHT-1M")


# -- the pure functions ---------------------------------------------------------------------------


def test_kind_candles_are_consistent_stable_and_near_the_trade_price():
    t0 = FROZEN_AT - FROZEN_AT % DAY
    for spec in (
        "usdm:BTCUSDT:1m:mark",
        "coinm:BTCUSD_PERP:5m:mark",
        "usdm:ETHUSDT:1m:index",
        "coinm:BTCUSD:1h:index",
        "usdm:SOLUSDT:1m:premium",
        "coinm:BTCUSD_PERP:1m:premium",
    ):
        key = StreamKey.parse(spec)
        iv = key.interval
        span = iv.ms
        assert span is not None
        premiums = []
        for i in range(300):
            t = t0 + i * span
            c = stream_candle(key, t)
            assert c == candle_at(key.market, key.symbol, iv, t, key.kind)  # stable
            lo, hi, o, cl = float(c.l), float(c.h), float(c.o), float(c.c)
            assert lo <= min(o, cl) and max(o, cl) <= hi, (spec, c)
            assert (c.v, c.q, c.V, c.Q) == ("0", "0", "0", "0")
            assert c.n == span // 1000
            assert t + span - 1 == c.T
            if key.kind is Kind.PREMIUM:
                premiums.append(cl)
                assert abs(cl) < 0.001
                continue
            perp = (
                key.symbol
                if key.kind is Kind.MARK
                else contract_symbol(key.market, key.symbol, "PERPETUAL")
            )
            assert perp is not None
            trade = float(candle_at(key.market, perp, iv, t).o)
            assert abs(o / trade - 1) < 0.001, (spec, o, trade)
            # The forming candle grows inside the final one and becomes it at the close.
            for now in (t, t + span // 3, t + span - 2):
                f = forming_at(key.market, key.symbol, iv, t, now, key.kind)
                assert f.o == c.o and lo <= float(f.l) <= float(f.c) <= float(f.h) <= hi
                assert f.n <= c.n
            assert forming_at(key.market, key.symbol, iv, t, t + span, key.kind) == c
        if premiums:
            negative = sum(p < 0 for p in premiums)
            assert negative > len(premiums) / 2  # mostly negative


def test_continuous_candles_are_the_holding_contracts_trade_candles():
    t = FROZEN_AT - FROZEN_AT % MINUTE - 5 * MINUTE
    cases = [
        (Market.USDM, "BTCUSDT", Kind.PERPETUAL, "BTCUSDT"),
        (Market.USDM, "BTCUSDT", Kind.CURRENT_QUARTER, "BTCUSDT_261225"),
        (Market.USDM, "BTCUSDT", Kind.NEXT_QUARTER, "BTCUSDT_270326"),
        (Market.COINM, "BTCUSD", Kind.PERPETUAL, "BTCUSD_PERP"),
        (Market.COINM, "ETHUSD", Kind.CURRENT_QUARTER, "ETHUSD_261225"),
        (Market.COINM, "BTCUSD", Kind.NEXT_QUARTER, "BTCUSD_270326"),
    ]
    for market, pair, kind, holder in cases:
        assert candle_at(market, pair, "1m", t, kind) == candle_at(market, holder, "1m", t)
    with pytest.raises(ValueError):
        candle_at(Market.COINM, "ETHUSD", "1m", t, Kind.NEXT_QUARTER)  # no such contract
    with pytest.raises(ValueError):
        candle_at(Market.SPOT, "BTCUSDT", "1m", t, Kind.MARK)
    with pytest.raises(ValueError):
        candle_at(Market.COINM, "BTCUSD", "1m", t, Kind.MARK)  # mark is keyed by symbol


# -- REST ------------------------------------------------------------------------------------------


@pytest.mark.simulator(**FROZEN)
async def test_rest_rows_of_every_kind_equal_the_pure_function(sim):
    current = FROZEN_AT - FROZEN_AT % MINUTE
    async with aiohttp.ClientSession() as session:
        for market, path, query, key in SERIES:
            status, rows, _ = await get(session, sim, market, path, interval="1m", limit=7, **query)
            assert status == 200, (path, rows)
            assert [r[0] for r in rows] == [current - (6 - i) * MINUTE for i in range(7)]
            want = [row_of(stream_candle(key, r[0])) for r in rows[:-1]]
            want.append(
                row_of(
                    forming_at(key.market, key.symbol, key.interval, current, FROZEN_AT, key.kind)
                )
            )
            assert rows == want, path
            last = rows[-1]
            assert last != row_of(stream_candle(key, current)), "the last row is still forming"
            if not key.kind.has_volume:
                assert all(r[5] == r[7] == r[9] == r[10] == "0" for r in rows)


async def used_weight_after(session, sim, market, path, **query) -> int:
    """The weight one call costs, measured within one real minute (the budget's window)."""
    for _ in range(5):
        minute = int(time.time() // 60)
        _, _, before = await get(session, sim, market, path.rsplit("/", 1)[0] + "/time")
        status, _, after = await get(session, sim, market, path, **query)
        if int(time.time() // 60) == minute:
            assert status == 200
            return int(after) - int(before)
    raise AssertionError("the minute kept rolling over")


@pytest.mark.simulator(**FROZEN)
async def test_rest_weights_follow_the_limit(sim):
    async with aiohttp.ClientSession() as session:
        for market, path, query, _key in SERIES[:1] + SERIES[2:5] + SERIES[6:]:
            for limit, weight in (
                (1, 1),
                (99, 1),
                (100, 2),
                (499, 2),
                (500, 5),
                (1000, 5),
                (1001, 10),
                (1500, 10),
            ):
                cost = await used_weight_after(
                    session, sim, market, path, interval="1h", limit=limit, **query
                )
                assert cost == weight, (path, limit, cost)
            # No limit: the default 500 rows.
            status, rows, _ = await get(session, sim, market, path, interval="1m", **query)
            assert status == 200 and len(rows) == 500
        status, body, _ = await get(
            session,
            sim,
            Market.USDM,
            "/fapi/v1/markPriceKlines",
            symbol="BTCUSDT",
            interval="1m",
            limit=1501,
        )
        assert status == 400 and body["code"] == -1130


@pytest.mark.simulator(**FROZEN)
async def test_rest_refuses_unknown_series_as_binance_does(sim):
    async with aiohttp.ClientSession() as session:
        cases = [
            (Market.USDM, "/fapi/v1/markPriceKlines", {"symbol": "NOPEUSDT"}, -1121),
            (Market.COINM, "/dapi/v1/markPriceKlines", {"symbol": "BTCUSD"}, -1121),
            (Market.COINM, "/dapi/v1/indexPriceKlines", {"pair": "BTCUSD_PERP"}, -1121),
            (Market.USDM, "/fapi/v1/indexPriceKlines", {"pair": "NOPEUSDT"}, -1121),
            (Market.USDM, "/fapi/v1/premiumIndexKlines", {"symbol": "nope"}, -1121),
            (
                Market.COINM,
                "/dapi/v1/continuousKlines",
                {"pair": "ETHUSD", "contractType": "NEXT_QUARTER"},
                -1121,
            ),
            (
                Market.USDM,
                "/fapi/v1/continuousKlines",
                {"pair": "BTCUSDT", "contractType": "perpetual"},
                -1100,
            ),
            (
                Market.USDM,
                "/fapi/v1/continuousKlines",
                {"pair": "BTCUSDT", "contractType": "TRADIFI_PERPETUAL"},
                -1100,
            ),
            (Market.USDM, "/fapi/v1/continuousKlines", {"pair": "BTCUSDT"}, -1102),
            (Market.USDM, "/fapi/v1/continuousKlines", {"contractType": "PERPETUAL"}, -1102),
            (Market.COINM, "/dapi/v1/indexPriceKlines", {"symbol": "BTCUSD"}, -1102),
        ]
        for market, path, query, code in cases:
            status, body, weight = await get(session, sim, market, path, interval="1m", **query)
            assert (status, body["code"]) == (400, code), (path, query, body)
            assert weight is not None
        status, body, _ = await get(
            session, sim, Market.USDM, "/fapi/v1/markPriceKlines", symbol="BTCUSDT", interval="1s"
        )
        assert (status, body["code"]) == (400, -1120)
        for path in ("/api/v3/markPriceKlines", "/api/v3/continuousKlines"):
            async with session.get(
                sim.endpoints[Market.SPOT].rest + path,
                params={"symbol": "BTCUSDT", "interval": "1m"},
            ) as resp:
                assert resp.status == 404


@pytest.mark.simulator(**FROZEN)
async def test_rest_time_windows_by_market(sim):
    """USD-M pages forward from startTime; COIN-M continuous, mark and index return the newest
    rows of the (at most 200-day) window; COIN-M premium pages forward like /klines."""
    current = FROZEN_AT - FROZEN_AT % MINUTE
    start, end = current - 100 * MINUTE, current - 10 * MINUTE
    async with aiohttp.ClientSession() as session:
        for market, path, query, key in SERIES:
            _, rows, _ = await get(
                session,
                sim,
                market,
                path,
                interval="1m",
                limit=5,
                startTime=start + 1,
                endTime=end,
                **query,
            )
            newest = market is Market.COINM and key.kind is not Kind.PREMIUM
            first = end - 4 * MINUTE if newest else start + MINUTE
            assert [r[0] for r in rows] == [first + i * MINUTE for i in range(5)], path
            assert rows == [row_of(stream_candle(key, r[0])) for r in rows]
            # Only startTime: COIN-M's window ends 200 days later (capped at now).
            _, rows, _ = await get(
                session,
                sim,
                market,
                path,
                interval="1d",
                limit=3,
                startTime=current - 400 * DAY,
                **query,
            )
            source = kind_source(key.market, key.symbol, key.kind)
            assert source is not None
            since = current - 400 * DAY
            first_day = since - since % DAY + DAY  # since is not midnight
            floor = max(first_day, source.onboard_date - source.onboard_date % DAY)
            days = list(range(floor, current + 1, DAY))
            want = [d for d in days if d <= since + 200 * DAY][-3:] if newest else days[:3]
            assert [r[0] for r in rows] == want, path
            # Only endTime: COIN-M's window starts 200 days before.
            _, rows, _ = await get(
                session, sim, market, path, interval="1m", limit=2, endTime=end, **query
            )
            assert [r[0] for r in rows] == [end - MINUTE, end]
        _, body, _ = await get(
            session,
            sim,
            Market.COINM,
            "/dapi/v1/markPriceKlines",
            symbol="BTCUSD_PERP",
            interval="1d",
            startTime=current - 201 * DAY,
            endTime=current,
        )
        assert body["code"] == -1127


@pytest.mark.simulator(**FROZEN)
async def test_exchange_info_lists_pairs_and_contract_types(sim):
    async with aiohttp.ClientSession() as session:
        _, usdm, _ = await get(session, sim, Market.USDM, "/fapi/v1/exchangeInfo")
        _, coinm, _ = await get(session, sim, Market.COINM, "/dapi/v1/exchangeInfo")
    u = {s["symbol"]: s for s in usdm["symbols"]}
    c = {s["symbol"]: s for s in coinm["symbols"]}
    assert (u["BTCUSDT"]["pair"], u["BTCUSDT"]["contractType"]) == ("BTCUSDT", "PERPETUAL")
    assert (u["BTCUSDT_261225"]["pair"], u["BTCUSDT_261225"]["contractType"]) == (
        "BTCUSDT",
        "CURRENT_QUARTER",
    )
    assert u["BTCUSDT_270326"]["contractType"] == "NEXT_QUARTER"
    assert (c["BTCUSD_PERP"]["pair"], c["BTCUSD_PERP"]["contractType"]) == ("BTCUSD", "PERPETUAL")
    assert (c["BTCUSD_261225"]["pair"], c["BTCUSD_261225"]["contractType"]) == (
        "BTCUSD",
        "CURRENT_QUARTER",
    )
    assert c["BTCUSD_270326"]["contractType"] == "NEXT_QUARTER"
    for info in (*u.values(), *c.values()):
        assert info["contractType"] in ("PERPETUAL", "CURRENT_QUARTER", "NEXT_QUARTER")
        assert info["symbol"].startswith(info["pair"])


# -- WebSocket -------------------------------------------------------------------------------------

# 120x: a 1m candle closes every half second of real time.
FAST = {"speed": 120.0, "extra_symbols": 5, "seed": 1}
K_FIELDS = ["t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"]
WIRE = ("t", "T", "o", "h", "l", "c", "v", "q", "V", "Q", "n")


async def frames_until(ws, done, timeout: float = 60.0) -> list[dict]:
    """JSON frames received until `done(frames)` holds; fails after `timeout` seconds."""
    frames: list[dict] = []
    deadline = time.monotonic() + timeout
    while not done(frames):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out after {len(frames)} frames: {frames[-3:]}"
        msg = await ws.receive(timeout=left)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        frames.append(json.loads(msg.data))
    return frames


def events_of(frames: list[dict], stream: str) -> list[dict]:
    return [f["data"] for f in frames if f.get("stream") == stream]


def closed_of(events: list[dict]) -> list[dict]:
    return [e for e in events if e["k"]["x"]]


def check_against_pure(events: list[dict], key: StreamKey, speed: float) -> None:
    """Closed frames equal the pure candle, forming ones grow inside it, pushes 250 ms apart."""
    closed = closed_of(events)
    assert closed, "no candle closed"
    for e in closed:
        want = stream_candle(key, e["k"]["t"])
        assert {f: e["k"][f] for f in WIRE} == {f: getattr(want, f) for f in WIRE}
        assert e["k"]["i"] == key.interval.value
    times = [e["k"]["t"] for e in closed]
    assert times == sorted(set(times)) and all(
        b - a == MINUTE for a, b in itertools.pairwise(times)
    )
    forming = [e for e in events if not e["k"]["x"]]
    for e in forming:
        final = stream_candle(key, e["k"]["t"])
        k = e["k"]
        assert k["o"] == final.o
        assert float(final.l) <= float(k["l"]) <= float(k["c"]) <= float(k["h"]) <= float(final.h)
    # Event times are exchange time at the push: pushes of one stream are >= 250 ms apart.
    stamps = [e["E"] for e in forming]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps and min(gaps) >= 0.8 * 250 * speed, gaps


@pytest.mark.simulator(**FAST)
async def test_usdm_continuous_streams_on_the_market_route(sim):
    names = {
        "btcusdt_perpetual@continuousKline_1m": StreamKey.parse("usdm:BTCUSDT:1m:perpetual"),
        "btcusdt_next_quarter@continuousKline_1m": StreamKey.parse("usdm:BTCUSDT:1m:next_quarter"),
    }
    url = sim.endpoints[Market.USDM].ws + "/stream?streams=" + "/".join(names)
    assert "/market/" in url

    def enough(frames):
        return all(len(closed_of(events_of(frames, n))) >= 3 for n in names)

    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        frames = await frames_until(ws, enough)
    for name, key in names.items():
        events = events_of(frames, name)
        for e in events:
            assert list(e) == ["e", "E", "ps", "ct", "k"]
            assert (e["e"], e["ps"], e["ct"]) == (
                "continuous_kline",
                "BTCUSDT",
                key.kind.value.upper(),
            )
            assert list(e["k"]) == [f for f in K_FIELDS if f != "s"]
        check_against_pure(events, key, FAST["speed"])
    # The holder's trade candle, exactly.
    last = closed_of(events_of(frames, "btcusdt_next_quarter@continuousKline_1m"))[-1]["k"]
    assert last["o"] == candle_at(Market.USDM, "BTCUSDT_270326", "1m", last["t"]).o


@pytest.mark.simulator(**FAST)
async def test_coinm_mark_index_and_continuous_streams_by_subscribe(sim):
    names = {
        "btcusd_perp@markPriceKline_1m": StreamKey.parse("coinm:BTCUSD_PERP:1m:mark"),
        "btcusd_261225@markPriceKline_1m": StreamKey.parse("coinm:BTCUSD_261225:1m:mark"),
        "ethusd@indexPriceKline_1m": StreamKey.parse("coinm:ETHUSD:1m:index"),
        "btcusd_current_quarter@continuousKline_1m": StreamKey.parse(
            "coinm:BTCUSD:1m:current_quarter"
        ),
    }
    url = sim.endpoints[Market.COINM].ws + "/ws"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_json({"method": "SUBSCRIBE", "params": list(names), "id": 7})
        await ws.send_json({"method": "SET_PROPERTY", "params": ["combined", True], "id": 8})

        def enough(frames):
            return all(len(closed_of(events_of(frames, n))) >= 3 for n in names)

        frames = await frames_until(ws, enough)
        await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 9})
        listed = await frames_until(ws, lambda fs: fs and fs[-1].get("id") == 9)
    assert {"result": None, "id": 7} in frames and {"result": None, "id": 8} in frames
    assert sorted(listed[-1]["result"]) == sorted(names)
    for name, key in names.items():
        events = events_of(frames, name)
        for e in events:
            if key.kind.is_continuous:
                want = ("continuous_kline", "BTCUSD", "CURRENT_QUARTER")
                assert (e["e"], e["ps"], e["ct"]) == want
                assert "s" not in e["k"]
                continue
            assert list(e) == ["e", "E", "ps", "k"] and list(e["k"]) == K_FIELDS
            if key.kind is Kind.MARK:
                assert (e["e"], e["ps"], e["k"]["s"]) == ("markPrice_kline", "BTCUSD", key.symbol)
            else:
                assert (e["e"], e["ps"], e["k"]["s"]) == ("indexPrice_kline", "ETHUSD", "0")
            assert (e["k"]["v"], e["k"]["q"], e["k"]["V"], e["k"]["Q"]) == ("0", "0", "0", "0")
        check_against_pure(events, key, FAST["speed"])


@pytest.mark.simulator(**FAST)
async def test_streams_binance_does_not_have_are_acknowledged_and_silent(sim):
    """Spot's non-trade kinds, USD-M mark/index, premium anywhere, unknown pairs and contract
    types, mark keyed by pair, index keyed by symbol, and continuous klines off USD-M's route:
    acknowledged, never pushed, while a trade stream on the same connection pushes."""
    cases = {
        sim.endpoints[Market.SPOT].ws: (
            "btcusdt@kline_1m",
            [
                "btcusdt_perpetual@continuousKline_1m",
                "btcusdt@markPriceKline_1m",
                "btcusdt@indexPriceKline_1m",
                "btcusdt@premiumIndexKline_1m",
            ],
        ),
        sim.endpoints[Market.USDM].ws: (
            "btcusdt@kline_1m",
            [
                "btcusdt@markPriceKline_1m",
                "btcusdt@indexPriceKline_1m",
                "btcusdt@premiumIndexKline_1m",
                "btcusdt_tradifi_perpetual@continuousKline_1m",
                "ethusdt_next_quarter@continuousKline_1m",
                "nopeusdt_perpetual@continuousKline_1m",
                "btcusdt_perpetual@continuousKline_1s",
                "BTCUSDT_perpetual@continuousKline_1m",
            ],
        ),
        sim.endpoints[Market.COINM].ws: (
            "btcusd_perp@kline_1m",
            [
                "btcusd_perp@premiumIndexKline_1m",
                "btcusd_perp@indexPriceKline_1m",
                "btcusd@markPriceKline_1m",
                "ethusd_next_quarter@continuousKline_1m",
                "btcusd_perp_perpetual@continuousKline_1m",  # the symbol where the pair goes
                "b0001usd_perp@markPriceKline_1m",  # halted
            ],
        ),
    }
    async with aiohttp.ClientSession() as session:
        for base, (trade, silent) in cases.items():
            async with session.ws_connect(base + "/ws") as ws:
                await ws.send_json({"method": "SUBSCRIBE", "params": silent, "id": 1})
                await ws.send_json(
                    {"method": "SET_PROPERTY", "params": ["combined", True], "id": 2}
                )
                await ws.send_json({"method": "SUBSCRIBE", "params": [trade], "id": 3})
                frames = await frames_until(
                    ws, lambda fs, t=trade: len(closed_of(events_of(fs, t))) >= 2
                )
            assert frames[0] == {"result": None, "id": 1}
            pushed = {f.get("stream") for f in frames if "id" not in f}
            assert pushed == {trade}, (base, pushed)


@pytest.mark.simulator(**FAST)
async def test_usdm_continuous_klines_are_silent_off_the_market_route(sim):
    stream = "/ws/btcusdt_perpetual@continuousKline_1m"
    routed = sim.endpoints[Market.USDM].ws
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(routed.removesuffix("/market") + stream) as unrouted,
        session.ws_connect(routed + stream) as ws,
    ):
        frames = await frames_until(ws, lambda fs: sum(f["k"]["x"] for f in fs) >= 2)
        assert all(f["e"] == "continuous_kline" for f in frames)
        with pytest.raises(TimeoutError):
            await unrouted.receive(timeout=0.05)
    paths = {c.path: c.kline_events_sent for c in sim.stats[Market.USDM].connections}
    assert paths[stream] == 0 and paths["/market" + stream] >= len(frames)


# -- faults ------------------------------------------------------------------------------------


def is_real(event: dict, key: StreamKey) -> bool:
    """Whether a frame carries the pure candle (final, or forming at its event time)."""
    k = event["k"]
    try:
        want = (
            stream_candle(key, k["t"])
            if k["x"]
            else forming_at(key.market, key.symbol, key.interval, k["t"], event["E"], key.kind)
        )
    except (TypeError, ValueError):
        return False
    return {f: k.get(f) for f in WIRE} == {f: getattr(want, f) for f in WIRE}


@pytest.mark.simulator(**FAST)
async def test_poison_and_stalls_reach_the_kind_streams(sim):
    mark, index = "btcusd_perp@markPriceKline_1m", "btcusd@indexPriceKline_1m"
    cont = "btcusd_perpetual@continuousKline_1m"
    keys = {
        mark: StreamKey.parse("coinm:BTCUSD_PERP:1m:mark"),
        index: StreamKey.parse("coinm:BTCUSD:1m:index"),
        cont: StreamKey.parse("coinm:BTCUSD:1m:perpetual"),
    }
    shapes = ["wrong_symbol", "nan", "far_future", "negative"]
    sim.faults.poison(rate=1, market=Market.COINM, streams=[mark, index], kinds=shapes)
    url = sim.endpoints[Market.COINM].ws + "/stream?streams=" + "/".join(keys)
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        frames = await frames_until(ws, lambda fs: len(closed_of(events_of(fs, cont))) >= 2)
        # Stall the continuous stream; the mark stream goes on meanwhile.
        sim.faults.poison(0, market=Market.COINM)
        sim.faults.stall(600, Market.COINM, streams=[cont])
        stalled_at = sim.clock.now_ms()
        during = await frames_until(
            ws, lambda fs: sum(e["E"] > stalled_at for e in events_of(fs, mark)) >= 4
        )
        sim.faults.stall(0, Market.COINM, streams=[cont])
        after = await frames_until(ws, lambda fs: len(events_of(fs, cont)) >= 2)
        await sim.faults.drop(Market.COINM)
        end = await ws.receive(timeout=10)
    assert end.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    poisoned = {mark: 0, index: 0}
    decoys = set()
    for name, key in keys.items():
        for e in events_of(frames, name):
            assert e["e"] == {mark: "markPrice_kline", index: "indexPrice_kline"}.get(
                name, "continuous_kline"
            )
            if is_real(e, key):
                continue
            assert name != cont, f"poison on the stream left alone: {e}"
            poisoned[name] += 1
            if e["k"]["s"] not in ("BTCUSD_PERP", "0") or e["ps"] != "BTCUSD":  # wrong_symbol
                assert (e["k"]["s"], e["ps"]) in (("ETHUSD_PERP", "ETHUSD"), ("0", "ETHUSD"))
                decoys.add(name)
    assert poisoned[mark] >= 4 and poisoned[index] >= 4
    assert decoys == {mark, index}
    assert sim.stats[Market.COINM].poison_frames_sent >= 8
    assert not [e for e in events_of(during, cont) if e["E"] > stalled_at]
    assert all(is_real(e, keys[cont]) for e in events_of(after, cont))


@pytest.mark.simulator(**FROZEN)
async def test_rest_faults_reach_the_kind_routes(sim):
    async with aiohttp.ClientSession() as session:
        sim.faults.rest_fail(500, 1, market=Market.USDM)
        status, body, _ = await get(
            session, sim, Market.USDM, "/fapi/v1/markPriceKlines", symbol="BTCUSDT", interval="1m"
        )
        assert (status, body["code"]) == (500, -1001)
        sim.faults.rest_fail(429, 1, retry_after=7, market=Market.COINM)
        url = sim.endpoints[Market.COINM].rest + "/dapi/v1/continuousKlines"
        query = {"pair": "BTCUSD", "contractType": "PERPETUAL", "interval": "1m"}
        async with session.get(url, params=query) as resp:
            assert (resp.status, resp.headers["Retry-After"]) == (429, "7")
            assert (await resp.json())["code"] == -1003
        sim.faults.poison_rest(
            rate=1, market=Market.COINM, symbols=["BTCUSD", "BTCUSD_PERP"], kinds=["negative"]
        )
        cases = [
            ("/dapi/v1/indexPriceKlines", {"pair": "BTCUSD"}, "coinm:BTCUSD:1m:index"),
            (
                "/dapi/v1/premiumIndexKlines",
                {"symbol": "BTCUSD_PERP"},
                "coinm:BTCUSD_PERP:1m:premium",
            ),
        ]
        for path, query, spec in cases:
            key = StreamKey.parse(spec)
            status, rows, _ = await get(
                session, sim, Market.COINM, path, interval="1m", limit=10, **query
            )
            assert status == 200 and len(rows) == 20
            current = FROZEN_AT - FROZEN_AT % MINUTE
            want = [row_of(stream_candle(key, current - i * MINUTE)) for i in range(9, 0, -1)]
            want.append(
                row_of(forming_at(key.market, key.symbol, "1m", current, FROZEN_AT, key.kind))
            )
            assert [r for r in rows if r in want] == want
            bogus = [r for r in rows if r not in want]
            assert len(bogus) == 10
            # Mark and index values are positive; a premium may be negative, so its poisoned
            # rows spoil a volume instead.
            fields = (5, 7, 9, 10) if key.kind is Kind.PREMIUM else (1, 2, 3, 4, 5, 7, 9, 10)
            for row in bogus:
                assert any(row[i].startswith("-") for i in fields), row
    calls = sim.stats[Market.COINM].kline_calls_by_symbol
    assert calls["BTCUSD"] == 2 and calls["BTCUSD_PERP"] == 1

"""The simulator, exercised over real loopback sockets with plain clients."""

from __future__ import annotations

import asyncio
import collections
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import tomllib

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from kline_tui.binance.markets import MARKETS
from kline_tui.model import Interval, Market
from kline_tui.sim import SimClock, Simulator, candle_at, expected_candle, forming_at, universe

WIRE_FIELDS = ("t", "T", "o", "h", "l", "c", "v", "q", "V", "Q", "n", "f", "L")


# Real time, a small universe, and fault dice that fall the same way every run.
pytestmark = pytest.mark.simulator(extra_symbols=50, seed=1)


def ws_url(sim: Simulator, market: Market, path: str) -> str:
    return sim.endpoints[market].ws + path


async def recv_json(ws, timeout: float = 3.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def collect(ws, seconds: float) -> list:
    """Every frame received within `seconds` (JSON-decoded when possible)."""
    frames: list = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            raw = await asyncio.wait_for(ws.recv(), left)
        except TimeoutError:
            break
        try:
            frames.append(json.loads(raw))
        except (ValueError, TypeError):
            frames.append(raw)
    return frames


async def request(ws, method: str, params=None, req_id=1):
    """Send a control message and return its reply, skipping kline events in between."""
    msg = {"method": method, "id": req_id}
    if params is not None:
        msg["params"] = params
    await ws.send(json.dumps(msg))
    return await reply(ws)


async def reply(ws):
    while "id" not in (frame := await recv_json(ws)):
        pass
    return frame


def wire_dict(candle) -> dict:
    return {f: getattr(candle, f) for f in WIRE_FIELDS}


# -- candles ----------------------------------------------------------------------------------

NOW = 1_795_600_000_000  # 2026-11-25


def test_candle_at_shape_and_formatting():
    iv = Interval.M1
    t = iv.open_time_at(NOW)
    spot = candle_at(Market.SPOT, "BTCUSDT", iv, t)
    usdm = candle_at(Market.USDM, "BTCUSDT", iv, t)
    coinm = candle_at(Market.COINM, "BTCUSD_PERP", iv, t)
    for c in (spot, usdm, coinm):
        assert c.T == iv.close_time(t) == t + 59_999
        assert (
            float(c.l) <= min(float(c.o), float(c.c)) <= max(float(c.o), float(c.c)) <= float(c.h)
        )
        assert 60_000 < float(c.o) < 130_000  # BTC near 95k
        assert c.n > 0 and c.f + c.n - 1 == c.L
    # Spot prints 8 decimals (prices on a 0.01 tick), USD-M its own precision (0.1 tick, 0.001 lot).
    assert re.fullmatch(r"\d+\.\d{2}000000", spot.o) and re.fullmatch(r"\d+\.\d{8}", spot.v)
    assert re.fullmatch(r"\d+\.\d", usdm.o) and re.fullmatch(r"\d+\.\d{3}", usdm.v)
    # COIN-M: volume in whole contracts of 100 USD, quote volume in BTC.
    assert re.fullmatch(r"\d+", coinm.v) and re.fullmatch(r"\d+", coinm.V)
    contracts = int(coinm.v)
    assert contracts * 100 / float(coinm.h) <= float(coinm.q) <= contracts * 100 / float(coinm.l)
    # USD-M quote volume is volume times a price inside the candle.
    assert float(usdm.v) * float(usdm.l) <= float(usdm.q) <= float(usdm.v) * float(usdm.h)
    assert float(usdm.V) <= float(usdm.v) and float(usdm.Q) <= float(usdm.q)
    eth = candle_at(Market.COINM, "ETHUSD_PERP", iv, t)
    assert int(eth.v) * 10 / float(eth.h) <= float(eth.q) <= int(eth.v) * 10 / float(eth.l)
    # Consecutive candles join: each opens at the previous close.
    nxt = candle_at(Market.SPOT, "BTCUSDT", iv, t + 60_000)
    assert nxt.n == 0 or nxt.o == spot.c
    assert expected_candle("spot", "BTCUSDT", "1m", t).high == float(spot.h)
    with pytest.raises(ValueError):
        candle_at(Market.SPOT, "NOPEUSDT", iv, t)
    with pytest.raises(ValueError):
        candle_at(Market.SPOT, "BTCUSDT", iv, t + 1)


def test_candle_at_is_pure_across_processes():
    # str hashes are salted per process: the candles must not depend on them.
    cases = [("spot", "ETHUSDT"), ("usdm", "S0007USDT"), ("coinm", "BTCUSD_261225")]
    t0 = NOW - NOW % 60_000
    code = (
        "import json; from kline_tui.sim import candle_at;"
        f"print(json.dumps([[getattr(candle_at(m, s, '1m', {t0} + k * 60_000), f)"
        f" for f in {WIRE_FIELDS!r}] for m, s in {cases!r} for k in range(3)]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    here = [
        [getattr(candle_at(m, s, "1m", t0 + k * 60_000), f) for f in WIRE_FIELDS]
        for m, s in cases
        for k in range(3)
    ]
    assert json.loads(out.stdout) == here


def test_candles_without_trades_repeat_the_previous_close():
    iv = Interval.M1
    start = iv.open_time_at(NOW) - 2000 * 60_000
    candles = [candle_at(Market.SPOT, "S0001USDT", iv, start + k * 60_000) for k in range(2000)]
    empty = [k for k in range(1, 2000) if candles[k].n == 0]
    assert 20 < len(empty) < 1000  # an illiquid symbol: some, not most
    assert any(k - 1 in empty for k in empty)  # runs of several empty candles too
    for k in empty:
        c, prev = candles[k], candles[k - 1]
        assert c.o == c.h == c.l == c.c == prev.c
        assert (c.f, c.L) == (-1, -1) and float(c.v) == float(c.q) == float(c.V) == float(c.Q) == 0
    btc = [candle_at(Market.SPOT, "BTCUSDT", iv, start + k * 60_000) for k in range(500)]
    assert sum(c.n == 0 for c in btc) <= 5  # rare for a major


def test_forming_candle_stays_inside_the_final_one():
    iv = Interval.M5
    t = iv.open_time_at(NOW)
    final = candle_at(Market.USDM, "ETHUSDT", iv, t)
    trades = []
    for k in range(0, 300_000, 7_000):
        f = forming_at(Market.USDM, "ETHUSDT", iv, t, t + k)
        assert f.t == t and f.T == final.T and f.o == final.o
        assert float(final.l) <= float(f.l) <= float(f.c) <= float(f.h) <= float(final.h)
        trades.append(f.n)
    assert trades == sorted(trades) and trades[-1] < final.n
    assert forming_at(Market.USDM, "ETHUSDT", iv, t, final.T + 1) == final


def test_universe_and_clock():
    for market in Market:
        symbols = universe(market)
        synthetic = [s for s in symbols if re.fullmatch(r"S\d{4,}(USDT|USD_PERP)", s)]
        assert len(synthetic) >= 2000
        assert all(re.fullmatch(r"[A-Z0-9_]+", s) for s in symbols)
        assert any(i.status == "BREAK" for i in symbols.values())
    assert {"BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"} <= set(universe(Market.USDM))
    coinm = universe(Market.COINM)
    assert coinm["BTCUSD_PERP"].contract_size == 100 and coinm["ETHUSD_PERP"].contract_size == 10
    assert coinm["BTCUSD_261225"].contract_type == "CURRENT_QUARTER"
    assert len(universe(Market.SPOT, extra_symbols=10)) < 40

    clock = SimClock(speed=100, offset_ms=-3_600_000)
    first = clock.now_ms()
    assert abs(first - (time.time() * 1000 - 3_600_000)) < 1000
    time.sleep(0.05)
    assert 4_000 <= clock.now_ms() - first <= 8_000


# -- WebSocket control ------------------------------------------------------------------------


async def test_subscribe_list_unsubscribe_and_errors(sim):
    async with connect(ws_url(sim, Market.SPOT, "/ws")) as ws:
        assert await request(ws, "SUBSCRIBE", ["btcusdt@kline_1m", "ethusdt@kline_5m"], 1) == {
            "result": None,
            "id": 1,
        }
        event = await recv_json(ws)
        assert event["e"] == "kline" and event["k"]["x"] is False
        listed = await request(ws, "LIST_SUBSCRIPTIONS", None, 3)
        assert listed == {"result": ["btcusdt@kline_1m", "ethusdt@kline_5m"], "id": 3}
        assert await request(ws, "UNSUBSCRIBE", ["ethusdt@kline_5m"], 4) == {
            "result": None,
            "id": 4,
        }
        assert await request(ws, "LIST_SUBSCRIPTIONS", [], 5) == {
            "result": ["btcusdt@kline_1m"],
            "id": 5,
        }
    # Spot allows 5 messages a second per connection: spread the error cases over connections.
    async with connect(ws_url(sim, Market.SPOT, "/ws")) as ws:
        assert await request(ws, "GET_PROPERTY", ["combined"], 6) == {"result": False, "id": 6}
        assert (await request(ws, "SET_PROPERTY", ["combined", "yes"], 7))["code"] == 1
        assert await request(ws, "SET_PROPERTY", ["nope", True], 8) == {
            "code": 0,
            "msg": "Unknown property",
            "id": 8,
        }
        bad = await request(ws, "FROBNICATE", [], 9)
        assert bad["code"] == 2 and bad["id"] == 9
    async with connect(ws_url(sim, Market.SPOT, "/ws")) as ws:
        assert (await request(ws, "SUBSCRIBE", "btcusdt@kline_1m", 10))["code"] == 2
        assert (await request(ws, "SUBSCRIBE", [1, 2], 11))["code"] == 2
        await ws.send('{"method":"SUBSCRIBE","params":["x"]}')  # no id
        answer = await reply(ws)
        assert answer["code"] == 2 and answer["id"] is None
        await ws.send("{not json")
        answer = await reply(ws)
        assert answer["code"] == 3 and answer["msg"].startswith("Invalid JSON")
        assert await request(ws, "LIST_SUBSCRIPTIONS", None, 12) == {"result": [], "id": 12}
    record = sim.stats[Market.SPOT].connections[0]
    assert [m for _, m, _ in record.control][:4] == [
        "SUBSCRIBE",
        "LIST_SUBSCRIPTIONS",
        "UNSUBSCRIBE",
        "LIST_SUBSCRIPTIONS",
    ]
    assert record.subscriptions == {"btcusdt@kline_1m"}
    assert (
        sim.stats[Market.SPOT].subscribe_messages == 4
        and sim.stats[Market.SPOT].unsubscribe_messages == 1
    )
    assert all(c.rate_violations == 0 for c in sim.stats[Market.SPOT].connections)


async def test_raw_and_combined_formats(sim):
    async with (
        connect(ws_url(sim, Market.COINM, "/ws/btcusd_perp@kline_1m")) as raw,
        connect(
            ws_url(sim, Market.COINM, "/stream?streams=btcusd_perp@kline_1m/ethusd_261225@kline_1h")
        ) as comb,
    ):
        event = await recv_json(raw)
        assert list(event) == ["e", "E", "s", "k"] and event["s"] == "BTCUSD_PERP"
        assert list(event["k"]) == [
            "t",
            "T",
            "s",
            "i",
            "f",
            "L",
            "o",
            "c",
            "h",
            "l",
            "v",
            "n",
            "x",
            "q",
            "V",
            "Q",
            "B",
        ]
        assert event["k"]["B"] == "0" and event["k"]["i"] == "1m"
        streams = set()
        for _ in range(4):
            wrapped = await recv_json(comb)
            assert set(wrapped) == {"stream", "data"} and wrapped["data"]["e"] == "kline"
            streams.add(wrapped["stream"])
        assert streams == {"btcusd_perp@kline_1m", "ethusd_261225@kline_1h"}
        # Switching a raw connection to combined wraps what follows.
        assert await request(raw, "SET_PROPERTY", ["combined", True], 2) == {
            "result": None,
            "id": 2,
        }
        frames = await collect(raw, 0.6)
        assert frames and all(f["stream"] == "btcusd_perp@kline_1m" for f in frames)


async def test_usdm_unrouted_path_stays_silent(sim):
    name = "btcusdt@kline_1m"
    async with (
        connect(ws_url(sim, Market.USDM, f"/ws/{name}")) as routed,  # base already ends in /market
        connect(f"ws://127.0.0.1:{sim.ports[Market.USDM]}/stream") as unrouted,
        connect(ws_url(sim, Market.USDM, "/ws")) as checks,
    ):
        assert await request(unrouted, "SUBSCRIBE", [name], 1) == {"result": None, "id": 1}
        assert await request(unrouted, "LIST_SUBSCRIPTIONS", None, 2) == {"result": [name], "id": 2}
        # Unknown symbol, an interval USD-M lacks, and a bad one: acknowledged, then silent.
        silent = [
            "nosuchusdt@kline_1m",
            "btcusdt@kline_1s",
            "btcusdt@kline_7m",
            "b0001usdt@kline_1m",
        ]
        assert await request(checks, "SUBSCRIBE", silent, 3) == {"result": None, "id": 3}
        routed_frames, unrouted_frames, check_frames = await asyncio.gather(
            collect(routed, 1.2), collect(unrouted, 1.2), collect(checks, 1.2)
        )
    assert len(routed_frames) >= 4 and all(f["s"] == "BTCUSDT" for f in routed_frames)
    assert unrouted_frames == [] and check_frames == []


async def test_rate_limit_closes_the_connection(sim):
    async with connect(ws_url(sim, Market.SPOT, "/ws")) as ok:
        for i in range(5):  # exactly the limit: fine
            await ok.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
        replies = [await recv_json(ok) for _ in range(5)]
        assert [r["id"] for r in replies] == list(range(5))
    async with connect(ws_url(sim, Market.SPOT, "/ws")) as ws:
        for i in range(6):
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(10):
                await recv_json(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    stats = sim.stats[Market.SPOT]
    assert stats.rate_violations == 1
    assert [c.max_incoming_per_s for c in stats.connections] == [5, 6]
    assert [c.rate_violations for c in stats.connections] == [0, 1]


async def test_server_pings_and_cuts_silent_clients():
    async with Simulator(extra_symbols=0, ping_interval_s=0.1) as sim:
        async with connect(ws_url(sim, Market.COINM, "/ws")) as polite:  # answers pings itself
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(ws_url(sim, Market.COINM, "/ws"), autoping=False) as mute,
            ):
                msg = await mute.receive(timeout=1)
                assert msg.type is aiohttp.WSMsgType.PING
                while not mute.closed:
                    msg = await mute.receive(timeout=2)
                assert mute.close_code == 1008
            await asyncio.sleep(0.1)
            assert polite.state.name == "OPEN"
        polite_rec, mute_rec = sim.stats[Market.COINM].connections
        assert polite_rec.pongs_received >= 3 and mute_rec.close_reason == "pong timeout"


# -- pushes with a fast clock -----------------------------------------------------------------


async def test_fast_clock_delivers_every_close_in_order_and_exact():
    async with (
        Simulator(speed=60, extra_symbols=0) as sim,
        connect(ws_url(sim, Market.USDM, "/ws/ethusdt@kline_1m")) as usdm,
        connect(ws_url(sim, Market.SPOT, "/stream?streams=btcusdt@kline_1m")) as spot,
    ):
        usdm_frames, spot_frames = await asyncio.gather(collect(usdm, 4.6), collect(spot, 4.6))
    for market, symbol, events in (
        (Market.USDM, "ETHUSDT", usdm_frames),
        (Market.SPOT, "BTCUSDT", [f["data"] for f in spot_frames]),
    ):
        closed = [e for e in events if e["k"]["x"]]
        assert len(closed) >= 3, (market, len(closed))
        opens = [e["k"]["t"] for e in closed]
        assert opens == list(range(opens[0], opens[0] + 60_000 * len(opens), 60_000))
        for e in closed:
            k = e["k"]
            assert {f: k[f] for f in WIRE_FIELDS} == wire_dict(
                candle_at(market, symbol, "1m", k["t"])
            )
            assert e["E"] >= k["T"] and k["s"] == symbol and k["i"] == "1m"
        assert not events[0]["k"]["x"]  # the first push is only the forming candle
        for e in events:
            if not e["k"]["x"]:
                assert e["k"]["o"] == candle_at(market, symbol, "1m", e["k"]["t"]).o
        # Each close comes just before the first forming update of the next candle.
        for i, e in enumerate(events[:-1]):
            if e["k"]["x"] and not events[i + 1]["k"]["x"]:
                assert events[i + 1]["k"]["t"] == e["k"]["t"] + 60_000
    assert sim.stats[Market.SPOT].closed_events_sent >= 3


# -- REST -------------------------------------------------------------------------------------


async def get(session, url, **params):
    async with session.get(url, params=params) as r:
        return r.status, r.headers, await r.json()


async def test_rest_klines_paging_and_values(sim):
    rest = sim.endpoints[Market.SPOT].rest
    url = rest + "/api/v3/klines"
    async with aiohttp.ClientSession() as s:
        status, headers, server = await get(s, rest + "/api/v3/time")
        assert status == 200 and abs(server["serverTime"] - sim.clock.now_ms()) < 1000
        now = sim.clock.now_ms()
        current = Interval.M1.open_time_at(now)

        status, headers, rows = await get(s, url, symbol="BTCUSDT", interval="1m", limit="5")
        assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == "3"  # time 1 + klines 2
        assert [r[0] for r in rows] == [current - 60_000 * k for k in range(4, -1, -1)]
        for r in rows[:-1]:
            c = candle_at(Market.SPOT, "BTCUSDT", "1m", r[0])
            assert r == [c.t, c.o, c.h, c.l, c.c, c.v, c.T, c.q, c.n, c.V, c.Q, "0"]
        assert rows[-1][1] == candle_at(Market.SPOT, "BTCUSDT", "1m", current).o  # forming

        start = current - 10 * 60_000 - 123  # unaligned: first open at or after it
        _, _, rows = await get(
            s, url, symbol="BTCUSDT", interval="1m", startTime=str(start), limit="3"
        )
        assert [r[0] for r in rows] == [current - 600_000, current - 540_000, current - 480_000]
        _, _, rows = await get(
            s, url, symbol="BTCUSDT", interval="1m", endTime=str(current - 60_001), limit="2"
        )
        assert [r[0] for r in rows] == [current - 180_000, current - 120_000]
        _, _, rows = await get(
            s,
            url,
            symbol="BTCUSDT",
            interval="1m",
            startTime=str(current - 300_000),
            endTime=str(current - 120_000),
        )
        assert [r[0] for r in rows] == [current - 300_000 + 60_000 * k for k in range(4)]
        _, _, rows = await get(
            s, url, symbol="BTCUSDT", interval="1m", startTime=str(current + 3_600_000)
        )
        assert rows == []  # never beyond now
        _, headers, rows = await get(s, url, symbol="ETHUSDT", interval="1h")
        assert len(rows) == 500 and rows[-1][0] == Interval.H1.open_time_at(now)

        cases = [
            ({"symbol": "BTCUSDT", "interval": "1m", "limit": "1001"}, -1130),
            ({"symbol": "NOPEUSDT", "interval": "1m"}, -1121),
            ({"symbol": "BTCUSDT", "interval": "7m"}, -1120),
            ({"interval": "1m"}, -1102),
        ]
        for params, code in cases:
            status, headers, body = await get(s, url, **params)
            assert (status, body["code"]) == (400, code)
            assert int(headers["X-MBX-USED-WEIGHT-1M"]) > 0

        futures = sim.endpoints[Market.USDM].rest + "/fapi/v1/klines"
        status, _, body = await get(s, futures, symbol="BTCUSDT", interval="1s")
        assert (status, body["code"]) == (400, -1120)
        _, _, rows = await get(s, futures, symbol="BTCUSDT", interval="1m", limit="1500")
        assert len(rows) == 1500
        coinm = sim.endpoints[Market.COINM].rest
        status, _, body = await get(
            s,
            coinm + "/dapi/v1/klines",
            symbol="BTCUSD_PERP",
            interval="1d",
            startTime="0",
            endTime=str(201 * 86_400_000),
        )
        assert (status, body["code"]) == (400, -1127)
        # Futures weights by limit, one pool for USD-M and COIN-M.
        _, h1, _ = await get(
            s, coinm + "/dapi/v1/klines", symbol="BTCUSD_PERP", interval="1m", limit="99"
        )
        _, h2, _ = await get(s, futures, symbol="BTCUSDT", interval="1m", limit="100")
        assert int(h2["X-MBX-USED-WEIGHT-1M"]) - int(h1["X-MBX-USED-WEIGHT-1M"]) == 2

        _, _, info = await get(s, coinm + "/dapi/v1/exchangeInfo")
        by_name = {x["symbol"]: x for x in info["symbols"]}
        assert (
            by_name["BTCUSD_PERP"]["contractSize"] == 100
            and by_name["BTCUSD_PERP"]["contractStatus"] == "TRADING"
        )
        assert by_name["BTCUSD_261225"]["contractType"] == "CURRENT_QUARTER"
        _, _, info = await get(s, rest + "/api/v3/exchangeInfo")
        assert info["timezone"] == "UTC" and any(x["status"] == "BREAK" for x in info["symbols"])
        assert {"symbol", "status", "baseAsset", "quoteAsset"} <= set(info["symbols"][0])


async def test_rest_weight_budget_429_then_418(sim):
    url = sim.endpoints[Market.USDM].rest + "/fapi/v1/klines"
    future = str(sim.clock.now_ms() + 86_400_000)  # empty answers: cheap, still weight 10
    async with aiohttp.ClientSession() as s:
        statuses = []
        for _ in range(600):
            status, headers, body = await get(
                s, url, symbol="BTCUSDT", interval="1m", limit="1500", startTime=future
            )
            statuses.append(status)
            if status == 429:
                break
        assert status == 429 and body["code"] == -1003
        assert (
            1 <= int(headers["Retry-After"]) <= 60 and int(headers["X-MBX-USED-WEIGHT-1M"]) > 2400
        )
        assert statuses.count(200) >= 239
        # COIN-M shares the spent futures budget; spot does not.
        status, _, _ = await get(s, sim.endpoints[Market.COINM].rest + "/dapi/v1/time")
        assert status == 429
        status, _, _ = await get(s, sim.endpoints[Market.SPOT].rest + "/api/v3/time")
        assert status == 200
        for _ in range(10):
            status, headers, _ = await get(s, url, symbol="BTCUSDT", interval="1m")
            if status == 418:
                break
        assert status == 418 and int(headers["Retry-After"]) >= 60
    assert sim.stats[Market.USDM].rest_429 >= 1 and sim.stats[Market.USDM].rest_418 == 1
    assert sim.stats[Market.USDM].max_used_weight > 2400


# -- faults -----------------------------------------------------------------------------------


async def test_fault_drop_abrupt_and_clean(sim):
    async with connect(ws_url(sim, Market.SPOT, "/ws/btcusdt@kline_1m")) as ws:
        await recv_json(ws)
        await sim.faults.drop(Market.SPOT)
        with pytest.raises(ConnectionClosed) as closed:
            await recv_json(ws)
        assert closed.value.rcvd is None  # no close frame
    async with connect(ws_url(sim, Market.COINM, "/ws/btcusd_perp@kline_1m")) as ws:
        await recv_json(ws)
        await sim.faults.drop(clean=True)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await recv_json(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    await asyncio.sleep(0.05)
    assert (
        sim.stats[Market.SPOT].open_connections() == []
        and sim.stats[Market.COINM].open_connections() == []
    )


async def test_fault_stall_some_or_all_streams(sim):
    a, b = "btcusdt@kline_1m", "ethusdt@kline_1m"
    async with connect(ws_url(sim, Market.USDM, f"/stream?streams={a}/{b}")) as ws:
        await collect(ws, 0.3)
        sim.faults.stall(0.9, Market.USDM, streams=[a])
        await collect(ws, 0.1)  # frames already on the wire
        frames = await collect(ws, 0.6)
        assert frames and {f["stream"] for f in frames} == {b}
        sim.faults.stall(0.7)
        await collect(ws, 0.1)
        assert await collect(ws, 0.5) == []
        await asyncio.sleep(0.15)
        frames = await collect(ws, 0.6)
        assert {f["stream"] for f in frames} == {a, b}
        assert await request(ws, "LIST_SUBSCRIPTIONS", None, 9) == {
            "result": [a, b],
            "id": 9,
        }  # still up


async def test_fault_inject_shutdown_and_malformed(sim):
    async with (
        connect(ws_url(sim, Market.SPOT, "/ws")) as raw,
        connect(ws_url(sim, Market.SPOT, "/stream"), max_size=None) as comb,
    ):
        await sim.faults.inject('{"hello":1}', Market.SPOT)
        await sim.faults.inject(b"\x00\x01", Market.SPOT)
        assert await raw.recv() == '{"hello":1}' and await raw.recv() == b"\x00\x01"
        assert await comb.recv() == '{"hello":1}' and await comb.recv() == b"\x00\x01"
        await sim.faults.server_shutdown(Market.SPOT)
        assert (await recv_json(raw))["e"] == "serverShutdown"
        shutdown = await recv_json(comb)
        assert shutdown["stream"] == "!serverShutdown" and shutdown["data"]["e"] == "serverShutdown"

    sim.faults.malformed_rate = 1.0
    async with connect(
        ws_url(sim, Market.USDM, "/stream?streams=btcusdt@kline_1m"), max_size=None
    ) as ws:
        frames = [await asyncio.wait_for(ws.recv(), 3) for _ in range(16)]
    good = [f for f in frames if _is_kline_frame(f)]
    assert len(good) >= 7 and len(frames) - len(good) >= 7  # every event has a broken twin
    assert sim.stats[Market.USDM].malformed_frames_sent >= 7


def _is_kline_frame(frame: str | bytes) -> bool:
    if not isinstance(frame, str):
        return False
    try:
        k = json.loads(frame)["data"]["k"]
        return isinstance(k["t"], int) and set(k) >= set(WIRE_FIELDS)
    except (ValueError, KeyError, TypeError):
        return False


async def test_fault_close_rates():
    async def run(rate: str, seconds: float) -> list[dict]:
        async with Simulator(speed=240, extra_symbols=0, seed=3) as sim:
            setattr(sim.faults, rate, 1.0)
            async with connect(ws_url(sim, Market.USDM, "/ws/btcusdt@kline_1m")) as ws:
                return await collect(ws, seconds)

    duplicated, late, dropped = await asyncio.gather(
        run("duplicate_close_rate", 1.1), run("late_close_rate", 1.1), run("drop_close_rate", 0.8)
    )
    closes = [e["k"]["t"] for e in duplicated if e["k"]["x"]]
    assert len(closes) >= 4 and all(closes.count(t) == 2 for t in closes)

    late_at = [i for i, e in enumerate(late) if e["k"]["x"]]
    assert late_at
    for i in late_at:  # after the next candle's first forming update
        assert any(not e["k"]["x"] and e["k"]["t"] > late[i]["k"]["t"] for e in late[:i])

    assert len({e["k"]["t"] for e in dropped}) >= 2 and not any(e["k"]["x"] for e in dropped)


async def test_fault_refuse_lifetime_and_rest_fail(sim):
    sim.faults.refuse_connections(0.5, Market.COINM)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(sim, Market.COINM, "/ws")):
            pass
    assert refused.value.response.status_code == 503
    async with connect(ws_url(sim, Market.SPOT, "/ws")):  # other markets unaffected
        pass
    await asyncio.sleep(0.6)
    sim.faults.set(Market.COINM, lifetime_s=0.4)
    async with connect(ws_url(sim, Market.COINM, "/ws")) as ws:
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 3)
        assert closed.value.rcvd.code == 1000 and 0.3 < time.monotonic() - started < 1.5

    rest = sim.endpoints[Market.SPOT].rest + "/api/v3/time"
    sim.faults.rest_fail(500, 2, market=Market.SPOT)
    sim.faults.rest_fail(429, 1, retry_after=7, market=Market.USDM)
    async with aiohttp.ClientSession() as s:
        assert [(await get(s, rest))[0] for _ in range(3)] == [500, 500, 200]
        status, headers, body = await get(s, sim.endpoints[Market.USDM].rest + "/fapi/v1/time")
        assert (status, headers["Retry-After"], body["code"]) == (429, "7", -1003)
        sim.faults.rest_delay_s = 0.3
        started = time.monotonic()
        status, _, _ = await get(s, rest)
        assert status == 200 and time.monotonic() - started >= 0.3


# -- the command line -------------------------------------------------------------------------


async def test_command_line_prints_endpoints_and_exits_cleanly():
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kline_tui.sim",
        "--speed",
        "10",
        "--offset-s",
        "-3600",
        "--extra-symbols",
        "10",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    lines = []
    while (
        line := (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
    ) and line.strip() != "ready":
        lines.append(line)
    config = tomllib.loads("".join(lines))
    assert set(config["endpoints"]) == {"spot", "usdm", "coinm"}
    assert config["endpoints"]["usdm"]["ws"].endswith("/market")
    async with aiohttp.ClientSession() as s:
        status, _, body = await get(
            s, config["endpoints"]["coinm"]["rest"] + MARKETS[Market.COINM].time_path
        )
    assert status == 200 and abs(body["serverTime"] - (time.time() * 1000 - 3_600_000)) < 60_000
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0 and b"Traceback" not in err


# -- the hostile server ---------------------------------------------------------------------

Y2017_MS = 1_483_228_800_000
FLAWS = {
    "event_time",
    "unaligned",
    "before_2017",
    "after_event",
    "far_future",
    "early_close",
    "nan",
    "negative",
    "infinite",
    "wrong_symbol",
    "wrong_interval",
    "huge_int",
}
REST_FLAWS = {
    "unaligned",
    "before_2017",
    "future",
    "far_future",
    "bad_close_time",
    "nan",
    "negative",
    "infinite",
    "huge_int",
}


def _number_flaws(values) -> set[str]:
    flaws = set()
    for text in values:
        x = float(text)
        if math.isnan(x):
            flaws.add("nan")
        elif math.isinf(x):
            flaws.add("infinite")
        elif x < 0:
            flaws.add("negative")
    return flaws


def kline_flaws(event: dict, symbol: str, interval: Interval, now_ms: int) -> set[str]:
    """What makes a kline event impossible, judged from the event alone (not from the
    simulator's code)."""
    k, event_time = event["k"], event["E"]
    if any(abs(v) >= 2**63 for v in (event_time, k["t"], k["T"], k["n"], k["f"], k["L"])):
        return {"huge_int"}
    flaws = _number_flaws(k[f] for f in ("o", "h", "l", "c", "v", "q", "V", "Q"))
    if abs(event_time - now_ms) > 3_600_000:
        flaws.add("event_time")
    t = k["t"]
    if t >= 10**15:
        flaws.add("far_future")
    elif t < Y2017_MS:
        flaws.add("before_2017")
    elif not interval.is_aligned(t):
        flaws.add("unaligned")
    if t > event_time:
        flaws.add("after_event")
    if k["x"] and k["T"] - event_time > 1000:
        flaws.add("early_close")
    if k["s"] != symbol or event["s"] != symbol:
        flaws.add("wrong_symbol")
    if k["i"] != interval.value:
        flaws.add("wrong_interval")
    return flaws


def row_flaws(row: list, interval: Interval, now_ms: int) -> set[str]:
    """What makes a REST klines row impossible."""
    t, close_time, trades = row[0], row[6], row[8]
    if any(abs(v) >= 2**63 for v in (t, close_time, trades)):
        return {"huge_int"}
    flaws = _number_flaws(row[i] for i in (1, 2, 3, 4, 5, 7, 9, 10))
    if t >= 10**15:
        return flaws | {"far_future"}
    if t < Y2017_MS:
        flaws.add("before_2017")
    elif not interval.is_aligned(t):
        flaws.add("unaligned")
    elif t > now_ms:
        flaws.add("future")
    if interval.is_aligned(t) and close_time != interval.close_time(t):
        flaws.add("bad_close_time")
    return flaws


def assert_real(market: Market, symbol: str, event: dict) -> None:
    """A frame without flaws is the simulator's candle, unaltered."""
    k = event["k"]
    if k["x"]:
        want = candle_at(market, symbol, "1m", k["t"])
    else:
        want = forming_at(market, symbol, "1m", k["t"], event["E"])
    assert {f: k[f] for f in WIRE_FIELDS} == wire_dict(want)


async def test_poisoned_kline_frames_of_every_shape_beside_exact_real_ones(sim):
    a, b = "btcusdt@kline_1m", "ethusdt@kline_1m"
    sim.faults.poison(rate=4, market=Market.USDM, streams=[a])
    async with connect(ws_url(sim, Market.USDM, f"/stream?streams={a}/{b}")) as comb:
        frames = []
        deadline = time.monotonic() + 1.6
        while time.monotonic() < deadline:
            frames.append((json.loads(await asyncio.wait_for(comb.recv(), 2)), sim.clock.now_ms()))
    seen, poisoned, real = set(), 0, collections.Counter()
    offsets = []
    for frame, now in frames:
        stream, event = frame["stream"], frame["data"]
        symbol = "BTCUSDT" if stream == a else "ETHUSDT"
        flaws = kline_flaws(event, symbol, Interval.M1, now)
        if flaws:
            assert stream == a, f"poison on the stream left alone: {event}"
            poisoned += 1
            seen |= flaws
            offsets.append(event["E"] - now)
        else:
            assert_real(Market.USDM, symbol, event)
            real[stream] += 1
    assert seen == FLAWS
    # both ahead of and behind the clock
    assert min(offsets) < -3_000_000 and max(offsets) > 3_000_000
    assert real[a] >= 4 and real[b] >= 4  # the real frames still come, exact
    # Four before each real frame (the last four may still be on their way).
    assert (
        4 * real[a] <= poisoned <= 4 * real[a] + 4 <= sim.stats[Market.USDM].poison_frames_sent + 4
    )
    assert sim.stats[Market.SPOT].poison_frames_sent == 0


async def test_poison_instead_of_the_real_frames_on_a_raw_connection(sim):
    sim.faults.poison(rate=1, market=Market.SPOT, kinds=["far_future", "nan"], replace=True)
    async with connect(ws_url(sim, Market.SPOT, "/ws/btcusdt@kline_1m")) as ws:
        events = await collect(ws, 2.2)  # spot pushes every 2 s: two rounds
    flaws = [kline_flaws(e, "BTCUSDT", Interval.M1, sim.clock.now_ms()) for e in events]
    assert len(events) >= 2 and all(f & {"far_future", "nan"} for f in flaws)
    assert {"far_future", "nan"} <= set().union(*flaws)
    assert sim.stats[Market.SPOT].kline_events_sent == 0
    sim.faults.poison(0, market=Market.SPOT)
    async with connect(ws_url(sim, Market.SPOT, "/ws/btcusdt@kline_1m")) as ws:
        event = await recv_json(ws)
    assert not kline_flaws(event, "BTCUSDT", Interval.M1, sim.clock.now_ms())
    with pytest.raises(ValueError):
        sim.faults.poison(kinds=["nonsense"])


async def test_poisoned_rest_rows_mixed_into_real_ones(sim):
    url = sim.endpoints[Market.SPOT].rest + "/api/v3/klines"
    sim.faults.poison_rest(rate=1, market=Market.SPOT, symbols=["BTCUSDT"])
    async with aiohttp.ClientSession() as s:
        answers = [await get(s, url, symbol="BTCUSDT", interval="1m", limit="10") for _ in range(2)]
        _, _, clean = await get(s, url, symbol="ETHUSDT", interval="1m", limit="10")
    now = sim.clock.now_ms()
    seen = set()
    for status, _, rows in answers:
        assert status == 200 and len(rows) == 20
        real = []
        for row in rows:
            flaws = row_flaws(row, Interval.M1, now)
            seen |= flaws
            if not flaws:
                real.append(row)
        assert len(real) == 10 and [r[0] for r in real] == sorted(r[0] for r in real)
        for row in real[:-1]:  # the last is the forming candle
            c = candle_at(Market.SPOT, "BTCUSDT", "1m", row[0])
            assert row == [c.t, c.o, c.h, c.l, c.c, c.v, c.T, c.q, c.n, c.V, c.Q, "0"]
    assert seen == REST_FLAWS
    assert len(clean) == 10 and not any(row_flaws(r, Interval.M1, now) for r in clean)
    stats = sim.stats[Market.SPOT]
    assert stats.poison_rows_sent == 20 and stats.rest_kline_calls == 3


@pytest.mark.parametrize("switch", ["ping_flood_per_s", "stray_replies_per_s"])
async def test_flood_goes_on_while_the_client_closes(sim, switch):
    sim.faults.set(Market.COINM, **{switch: math.inf})
    url = ws_url(sim, Market.COINM, "/ws")
    async with aiohttp.ClientSession() as session:
        quiet = await session.ws_connect(ws_url(sim, Market.SPOT, "/ws"), autoping=False)
        ws = await session.ws_connect(url, autoping=False)
        kinds = collections.Counter()
        ids = set()
        started = time.monotonic()
        while time.monotonic() - started < 0.5:
            msg = await ws.receive(timeout=1)
            kinds[msg.type] += 1
            if msg.type is aiohttp.WSMsgType.TEXT:
                reply = json.loads(msg.data)
                assert reply["result"] is None
                ids.add(reply["id"])
        if switch == "ping_flood_per_s":
            assert kinds[aiohttp.WSMsgType.PING] >= 200 and not ids
        else:
            assert len(ids) >= 200 and kinds[aiohttp.WSMsgType.PING] == 0
        # aiohttp's close reads until a close frame comes: the flood never lets it finish.
        closing = asyncio.create_task(ws.close())
        await asyncio.sleep(1.5)
        assert not closing.done()
        record = sim.stats[Market.COINM].connections[-1]
        assert record.client_closed_at is not None and record.frames_after_client_close >= 100
        sim.faults.set(Market.COINM, **{switch: 0})
        assert await asyncio.wait_for(closing, 2) is True
        assert ws.close_code == 1000
        # Only the switched market floods.
        with pytest.raises(TimeoutError):
            await quiet.receive(timeout=0.2)
        await quiet.close()


async def test_paced_stray_replies(sim):
    sim.faults.stray_replies_per_s = 50
    async with connect(ws_url(sim, Market.USDM, "/ws")) as ws:
        frames = await collect(ws, 1.0)
        sent = sim.stats[Market.USDM].stray_replies_sent
        sim.faults.stray_replies_per_s = 0  # or the close would wait for websockets' 10 s timeout
    assert 30 <= len(frames) <= 70 and all(set(f) == {"result", "id"} for f in frames)
    assert len(frames) <= sent <= len(frames) + 2


async def test_frames_just_under_and_just_over_a_size_limit(sim):
    sim.faults.sized_frames(4096, market=Market.SPOT)
    url = ws_url(sim, Market.SPOT, "/ws/btcusdt@kline_1m")
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, max_msg_size=0) as ws:
            frames = [(await ws.receive(timeout=3)).data for _ in range(3)]
        assert [len(f.encode()) for f in frames] == [len(frames[0].encode()), 4095, 4097]
        real = json.loads(frames[0])
        for padded in frames[1:]:
            event = json.loads(padded)
            assert set(event.pop("pad")) == {"x"} and event == real
        async with session.ws_connect(url, max_msg_size=4096) as strict:
            kinds = [(await strict.receive(timeout=3)).type for _ in range(3)]
        assert kinds == [aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.ERROR]
        assert strict.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    assert sim.stats[Market.SPOT].sized_frames_sent >= 4
    with pytest.raises(ValueError):
        sim.faults.sized_frames(100)


async def test_slow_loris_handshakes(sim):
    sim.faults.set(Market.SPOT, handshake_delay_s=0.6)
    url = ws_url(sim, Market.SPOT, "/ws")
    started = time.monotonic()
    _, writer = await asyncio.open_connection("127.0.0.1", sim.ports[Market.SPOT])
    # TCP is accepted at once
    assert time.monotonic() - started < 0.3
    writer.close()
    async with connect(url):
        assert time.monotonic() - started >= 0.6
    sim.faults.set(Market.SPOT, handshake_delay_s=math.inf)
    with pytest.raises(TimeoutError):
        async with connect(url, open_timeout=0.8):
            pass
    async with aiohttp.ClientSession() as session:
        waiting = asyncio.create_task(session.ws_connect(url))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        sim.faults.set(Market.SPOT, handshake_delay_s=0)  # answers the held handshakes
        ws = await asyncio.wait_for(waiting, 1)
        await ws.close()
    async with connect(
        ws_url(sim, Market.USDM, "/ws"), open_timeout=0.5
    ):  # other markets unaffected
        pass
    assert sim.stats[Market.SPOT].handshakes_delayed == 3  # a bare TCP connection sends no upgrade


async def test_escape_sequences_in_close_reasons_and_error_messages(sim):
    from kline_tui.sim import HOSTILE_TEXT

    assert "\x1b" in HOSTILE_TEXT
    sim.faults.hostile_text(market=Market.SPOT)
    async with connect(ws_url(sim, Market.SPOT, "/ws")) as ws:
        error = await request(ws, "SUBSCRIBE", "not-a-list", 1)
        assert error["code"] == 2 and error["msg"].endswith(HOSTILE_TEXT)
        await sim.faults.drop(Market.SPOT, clean=True)
        with pytest.raises(ConnectionClosed) as closed:
            await recv_json(ws)
    assert (
        closed.value.rcvd.code == 1001 and closed.value.rcvd.reason == "going away " + HOSTILE_TEXT
    )
    sim.faults.rest_fail(429, 1, market=Market.SPOT)
    async with aiohttp.ClientSession() as s:
        status, _, body = await get(s, sim.endpoints[Market.SPOT].rest + "/api/v3/time")
        assert status == 429 and body["msg"].endswith(HOSTILE_TEXT)
        status, _, body = await get(
            s, sim.endpoints[Market.SPOT].rest + "/api/v3/klines", symbol="NOPE", interval="1m"
        )
        assert (status, body["code"]) == (400, -1121) and body[
            "msg"
        ] == "Invalid symbol. " + HOSTILE_TEXT
        status, _, body = await get(
            s, sim.endpoints[Market.USDM].rest + "/fapi/v1/klines", symbol="NOPE", interval="1m"
        )
        assert body["msg"] == "Invalid symbol."  # only the switched market
    sim.faults.set(Market.SPOT, lifetime_s=0.3)
    async with connect(ws_url(sim, Market.SPOT, "/ws")) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 3)
    assert HOSTILE_TEXT in closed.value.rcvd.reason
    sim.faults.hostile_text(None)
    assert sim.faults[Market.SPOT].close_reason("x") == b"x"


@pytest.mark.parametrize("status", [429, 418])
async def test_handshake_rate_limited_with_retry_after(sim, status):
    sim.faults.refuse_connections(1.0, Market.USDM, status=status, retry_after=7)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(ws_url(sim, Market.USDM, "/ws"))
    assert refused.value.status == status and refused.value.headers["Retry-After"] == "7"
    with pytest.raises(InvalidStatus) as again:
        async with connect(ws_url(sim, Market.USDM, "/ws")):
            pass
    assert json.loads(again.value.response.body)["code"] == -1003
    assert sim.stats[Market.USDM].handshakes_refused == 2

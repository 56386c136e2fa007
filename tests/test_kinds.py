"""Every kind of kline on the client side: the frames, the REST endpoints, the spec checks, the
polling budget, and (against the simulator) a recording of every kind, exact and gap-free."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time

import polars as pl
import pytest
from aiohttp import web

from kline_tui.binance import wire
from kline_tui.binance.rest import SymbolInfo
from kline_tui.model import Interval, Kind, Market, StreamKey
from kline_tui.recorder.hub import StreamStatus
from kline_tui.recorder.pipeline import StreamRefused
from kline_tui.recorder.poller import budget_problem, poll_capacity, within_budget
from kline_tui.recorder.symbols import key_problem
from kline_tui.store.schema import CANDLE_COLUMNS

from .datasets import read_dataset
from .support import (
    KLINE_TUI,
    env_for,
    fast_pipeline,
    run_for,
    run_to_end,
    wait_until,
    write_config,
)
from .test_rest import NOW, T0, M, row, serve

# -- frames (docs/binance-kline-kinds.md, 1a) ------------------------------------------------------

K_FIELDS = (
    '"t":1719765480000,"T":1719765539999,"i":"1m","f":1,"L":2,"o":"{o}","c":"{c}","h":"{h}",'
    '"l":"{l}","v":"{v}","n":60,"x":{x},"q":"{v}","V":"{v}","Q":"{v}","B":"0"'
)


def frame(stream: str, event: str, top: str, k: str) -> str:
    return f'{{"stream":"{stream}","data":{{"e":"{event}","E":1719765539838,{top},"k":{{{k}}}}}}}'


def k_fields(*, s: str | None = None, o="100", h="101", lo="99", c="100.5", v="0", x="false"):
    fields = K_FIELDS.format(o=o, c=c, h=h, l=lo, v=v, x=x)
    return fields if s is None else f'"s":"{s}",{fields}'


def continuous(ct="PERPETUAL", **k):
    return frame(
        "btcusdt_perpetual@continuousKline_1m",
        "continuous_kline",
        f'"ps":"BTCUSDT","ct":"{ct}"',
        k_fields(**{"v": "12.5", **k}),
    )


def mark(**k):
    return frame(
        "btcusd_perp@markPriceKline_1m",
        "markPrice_kline",
        '"ps":"BTCUSD"',
        k_fields(s="BTCUSD_PERP", **k),
    )


def index(**k):
    return frame(
        "btcusd@indexPriceKline_1m", "indexPrice_kline", '"ps":"BTCUSD"', k_fields(s="0", **k)
    )


def test_continuous_event_is_keyed_by_pair_and_contract_type():
    msg = wire.decode(continuous(x="true"))
    assert isinstance(msg, wire.Envelope) and isinstance(msg.data, wire.ContinuousKlineEvent)
    k, symbol, kind = msg.data.series()
    assert (symbol, kind, k.symbol, k.interval, k.closed) == (
        "BTCUSDT",
        Kind.PERPETUAL,
        "BTCUSDT",
        "1m",
        True,
    )
    assert (k.open, k.high, k.low, k.close, k.volume, k.trades) == (100, 101, 99, 100.5, 12.5, 60)
    stream = StreamKey.parse("usdm:BTCUSDT:1m:perpetual").stream_name
    assert msg.stream == stream
    for ct, kind in [
        ("CURRENT_QUARTER", Kind.CURRENT_QUARTER),
        ("NEXT_QUARTER", Kind.NEXT_QUARTER),
    ]:
        assert wire.decode(continuous(ct=ct)).data.series()[2] is kind


def test_mark_event_is_keyed_by_its_symbol_and_index_by_its_pair():
    k, symbol, kind = wire.decode(mark()).data.series()
    assert (symbol, kind, k.symbol) == ("BTCUSD_PERP", Kind.MARK, "BTCUSD_PERP")
    k, symbol, kind = wire.decode(index()).data.series()
    assert (symbol, kind, k.symbol) == ("BTCUSD", Kind.INDEX, "BTCUSD")  # `k.s` is "0"
    assert (k.volume, k.quote_volume, k.taker_buy_volume, k.taker_buy_quote_volume) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    "text, why",
    [
        (continuous(ct="TRADIFI_PERPETUAL"), "unknown contract type"),
        (continuous(lo="-1"), "impossible"),  # trade rules
        (continuous(h="99.5"), "impossible"),  # high below the close
        (mark(v="1"), "impossible"),  # a volume: not the frame we think it is
        (mark(lo="0", o="0"), "impossible"),  # prices are positive
        (mark(h="NaN"), "impossible"),
        (index(v="0.5"), "impossible"),
        (index(o="102"), "impossible"),  # open above the high
        (index(h="Infinity"), "impossible"),
        (mark().replace('"n":60', '"n":1000000000000000000000000000707'), "impossible"),
        (index().replace('"n":60', '"n":-1'), "impossible"),
    ],
)
def test_impossible_kind_frames_are_malformed_never_raised(text, why):
    msg = wire.decode(text)
    assert isinstance(msg, wire.Malformed) and why in msg.reason


@pytest.mark.parametrize(
    "kind, values, sane",
    [
        (Kind.PREMIUM, (-0.0005, -0.0004, -0.0006, -0.00045), True),
        (Kind.PREMIUM, (0.0002, 0.0003, 0.0001, 0.0002), True),  # positive: no sign rule
        (Kind.PREMIUM, (0.01, 0.06, 0.01, 0.02), False),  # past the default bound
        (Kind.PREMIUM, (0.0, 0.0, float("nan"), 0.0), False),
        (Kind.PREMIUM, (0.001, 0.0005, 0.0, 0.0002), False),  # open above the high
        (Kind.MARK, (100.0, 101.0, 99.0, 100.0), True),
        (Kind.INDEX, (-1.0, 1.0, -2.0, 0.0), False),
    ],
)
def test_premium_mark_and_index_values(kind, values, sane):
    from kline_tui.model import Candle

    o, h, lo, c = values
    candle = Candle(T0, T0 + M - 1, o, h, lo, c, 0.0, 0.0, 0.0, 0.0, 60)
    assert wire.kind_is_sane(candle, kind) is sane
    # A larger bound (the config's premium_bound) takes a larger premium.
    if kind is Kind.PREMIUM and values[1] == 0.06:
        assert wire.kind_is_sane(candle, kind, premium_bound=0.1)


# -- REST endpoints (docs/binance-kline-kinds.md, 1b) ---------------------------------------------


@pytest.mark.parametrize(
    "spec, path, params",
    [
        ("usdm:BTCUSDT:1m:mark", "/fapi/v1/markPriceKlines", {"symbol": "BTCUSDT"}),
        ("usdm:BTCUSDT:1m:index", "/fapi/v1/indexPriceKlines", {"pair": "BTCUSDT"}),
        ("usdm:BTCUSDT:1m:premium", "/fapi/v1/premiumIndexKlines", {"symbol": "BTCUSDT"}),
        (
            "usdm:BTCUSDT:1m:perpetual",
            "/fapi/v1/continuousKlines",
            {"pair": "BTCUSDT", "contractType": "PERPETUAL"},
        ),
        ("coinm:BTCUSD_PERP:1m:mark", "/dapi/v1/markPriceKlines", {"symbol": "BTCUSD_PERP"}),
        ("coinm:BTCUSD:1m:index", "/dapi/v1/indexPriceKlines", {"pair": "BTCUSD"}),
        ("coinm:BTCUSD_PERP:1m:premium", "/dapi/v1/premiumIndexKlines", {"symbol": "BTCUSD_PERP"}),
        (
            "coinm:BTCUSD:1m:next_quarter",
            "/dapi/v1/continuousKlines",
            {"pair": "BTCUSD", "contractType": "NEXT_QUARTER"},
        ),
        ("usdm:BTCUSDT:1m", "/fapi/v1/klines", {"symbol": "BTCUSDT"}),
    ],
)
async def test_each_kind_asks_its_endpoint_with_its_key_and_weight(spec, path, params):
    key = StreamKey.parse(spec)
    asked: list[dict[str, str]] = []
    volume = "1" if key.kind.has_volume else "0"

    def answer(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        prices = {"o": "-0.0004", "h": "-0.0003", "lo": "-0.0005", "c": "-0.00045"}
        rows = [
            row(T0 + i * M, v=volume, **(prices if key.kind is Kind.PREMIUM else {}))
            for i in range(3)
        ]
        if not key.kind.has_volume:
            for r in rows:
                r[7] = r[9] = r[10] = "0"
        return web.json_response(rows)

    async with serve({path: answer, path.rsplit("/", 1)[0] + "/time": {"serverTime": NOW}}) as rest:
        weights: list[int] = []
        get = rest._get

        async def charged(market, path, params, weight):
            weights.append(weight)
            return await get(market, path, params, weight)

        rest._get = charged
        candles = await rest.klines(key.market, key.symbol, key.interval, limit=3, kind=key.kind)
        await rest.klines(key.market, key.symbol, key.interval, limit=1500, kind=key.kind)
    assert weights == [1, 10]  # the trade klines' table: limit < 100 weighs 1, > 1000 weighs 10
    assert [c.open_time for c in candles] == [T0, T0 + M, T0 + 2 * M]
    assert asked[0] == {**params, "interval": "1m", "limit": "3"}
    assert rest.rejected_rows == 0


async def test_rows_are_checked_by_the_rules_of_their_kind():
    def premium(request: web.Request) -> web.Response:
        return web.json_response(
            [
                [
                    T0,
                    "-0.0004",
                    "-0.0003",
                    "-0.0005",
                    "-0.0004",
                    "0",
                    T0 + M - 1,
                    "0",
                    12,
                    "0",
                    "0",
                    "0",
                ],
                [
                    T0 + M,
                    "0.0001",
                    "0.0002",
                    "0.0001",
                    "0.0002",
                    "0",
                    T0 + 2 * M - 1,
                    "0",
                    12,
                    "0",
                    "0",
                    "0",
                ],
                [
                    T0 + 2 * M,
                    "0.1",
                    "0.2",
                    "0.1",
                    "0.1",
                    "0",
                    T0 + 3 * M - 1,
                    "0",
                    12,
                    "0",
                    "0",
                    "0",
                ],
                [
                    T0 + 3 * M,
                    "-0.0004",
                    "-0.0003",
                    "-0.0005",
                    "-0.0004",
                    "7",
                    T0 + 4 * M - 1,
                    "0",
                    12,
                    "0",
                    "0",
                    "0",
                ],
            ]
        )

    def mark_rows(request: web.Request) -> web.Response:
        return web.json_response(
            [
                [T0, "10", "11", "9", "10", "0", T0 + M - 1, "0", 60, "0", "0", "0"],
                [T0 + M, "10", "11", "9", "10", "3", T0 + 2 * M - 1, "0", 60, "0", "0", "0"],
                [T0 + 2 * M, "0", "11", "0", "10", "0", T0 + 3 * M - 1, "0", 60, "0", "0", "0"],
            ]
        )

    routes = {"/fapi/v1/premiumIndexKlines": premium, "/fapi/v1/markPriceKlines": mark_rows}
    async with serve(routes) as rest:
        got = await rest.klines(Market.USDM, "BTCUSDT", Interval.M1, kind=Kind.PREMIUM)
        assert [c.open_time for c in got] == [T0, T0 + M]  # 0.2 is past the bound; a volume
        rest.premium_bound = 0.5
        got = await rest.klines(Market.USDM, "BTCUSDT", Interval.M1, kind=Kind.PREMIUM)
        assert [c.open_time for c in got] == [T0, T0 + M, T0 + 2 * M]
        got = await rest.klines(Market.USDM, "BTCUSDT", Interval.M1, kind=Kind.MARK)
        assert [c.open_time for c in got] == [T0]
        assert rest.rejected_rows == 2 + 1 + 2
        assert any("usdm:BTCUSDT:1m:premium" in w for w in rest.warnings)
        assert any("usdm:BTCUSDT:1m:mark" in w for w in rest.warnings)


async def test_coinm_kinds_page_within_the_window_and_the_page_size():
    """A range of more rows than a page is asked page by page, each span no longer than a page
    holds (COIN-M answers the newest rows of a longer span) nor than 200 days."""
    asked: list[tuple[int, int]] = []
    now = T0 + 5000 * M + 30_000

    def answer(request: web.Request) -> web.Response:
        start, end = int(request.query["startTime"]), int(request.query["endTime"])
        asked.append((start, end))
        limit = int(request.query["limit"])
        first = max(start, end - (limit - 1) * M)  # the newest rows, as COIN-M answers
        first -= (first - T0) % M
        rows = [
            [t, "10", "11", "9", "10", "0", t + M - 1, "0", 60, "0", "0", "0"]
            for t in range(first, min(end, now) + 1, M)
        ]
        return web.json_response(rows)

    routes = {"/dapi/v1/indexPriceKlines": answer, "/dapi/v1/time": {"serverTime": now}}
    async with serve(routes) as rest:
        candles, _ = await rest.closed_klines(
            Market.COINM, "BTCUSD", Interval.M1, T0, T0 + 4000 * M, kind=Kind.INDEX
        )
    assert [c.open_time for c in candles] == [T0 + i * M for i in range(4001)]
    assert all((end - start) // M + 1 <= 1500 for start, end in asked)


# -- specs against exchangeInfo (docs/binance-kline-kinds.md, 4) ----------------------------------

LISTED = {
    "BTCUSD_PERP": SymbolInfo("BTCUSD_PERP", "TRADING", 100.0, "BTCUSD", "PERPETUAL"),
    "BTCUSD_261225": SymbolInfo("BTCUSD_261225", "TRADING", 100.0, "BTCUSD", "CURRENT_QUARTER"),
    "ETHUSD_PERP": SymbolInfo("ETHUSD_PERP", "TRADING", 10.0, "ETHUSD", "PERPETUAL"),
    "ETHUSD_270326": SymbolInfo("ETHUSD_270326", "PENDING_TRADING", 10.0, "ETHUSD", "NEXT_QUARTER"),
}


@pytest.mark.parametrize(
    "spec, problem",
    [
        ("coinm:BTCUSD_PERP:1m:mark", None),
        ("coinm:BTCUSD_PERP:1m:premium", None),
        ("coinm:BTCUSD:1m:index", None),
        ("coinm:BTCUSD:1m:perpetual", None),
        ("coinm:BTCUSD:1m:current_quarter", None),
        ("coinm:BTCUSD:1m:next_quarter", "no trading NEXT_QUARTER contract of pair BTCUSD"),
        ("coinm:ETHUSD:1m:next_quarter", "no trading NEXT_QUARTER contract of pair ETHUSD"),
        ("coinm:BTCUSD:1m:mark", "unknown symbol BTCUSD on coinm"),  # mark is keyed by symbol
        ("coinm:BTCUSD_PERP:1m:index", "unknown pair BTCUSD_PERP on coinm"),  # index by pair
        ("coinm:XRPUSD:1m:perpetual", "unknown pair XRPUSD on coinm"),
    ],
)
def test_specs_are_checked_by_symbol_or_by_pair_and_contract_type(spec, problem):
    got = key_problem(StreamKey.parse(spec), LISTED)
    assert (got is None) if problem is None else (got is not None and problem in got), got


def test_a_listed_but_not_trading_contract_still_has_its_history():
    key = StreamKey.parse("coinm:ETHUSD:1m:next_quarter")
    assert key_problem(key, LISTED, trading=False) is None


# -- the polling budget ---------------------------------------------------------------------------


def polled(n: int, market: str = "usdm", kind: str = "mark") -> list[StreamKey]:
    return [StreamKey.parse(f"{market}:S{i:04d}USDT:1m:{kind}") for i in range(n)]


def test_polled_streams_share_half_the_futures_budget():
    # One poll of 3 rows weighs 1; at a shared close every polled stream polls in one minute:
    # half of 2,400 a minute is 1,200 streams, USD-M and COIN-M together (one budget).
    assert poll_capacity(Market.USDM) == poll_capacity(Market.COINM) == 1200
    assert budget_problem(polled(1200)) is None
    line = budget_problem(polled(1201))
    assert line is not None and "1201 streams" in line and "at most 1200 such streams fit" in line
    mixed = polled(600) + polled(601, "coinm", "premium")
    assert "at most 1200" in (budget_problem(mixed) or "")
    # Streamed kinds cost no polls: trade, continuous, COIN-M mark and index.
    streamed = [StreamKey.parse(f"coinm:S{i:04d}USD:1m:index") for i in range(3000)]
    assert budget_problem(polled(1200) + streamed) is None
    assert len(within_budget(polled(1300) + streamed)) == 1200 + 3000


def test_every_spec_of_the_brief_parses_with_its_stream_or_its_poll():
    table = {
        "usdm:BTCUSDT:1m:mark": None,
        "coinm:BTCUSD:1m:index": "btcusd@indexPriceKline_1m",
        "usdm:BTCUSDT:1h:perpetual": "btcusdt_perpetual@continuousKline_1h",
        "coinm:BTCUSD:1m:next_quarter": "btcusd_next_quarter@continuousKline_1m",
        "usdm:BTCUSDT:1m:premium": None,
        "coinm:BTCUSD_PERP:1m:mark": "btcusd_perp@markPriceKline_1m",
    }
    for spec, stream in table.items():
        key = StreamKey.parse(spec)
        assert str(key) == spec
        assert key.has_stream is (stream is not None)
        if stream is not None:
            assert key.stream_name == stream
    assert json.dumps(sorted(table))  # the specs are plain text a config can hold


# -- recording every kind against the simulator ---------------------------------------------------

POLLED = [
    "usdm:BTCUSDT:1m:mark",
    "usdm:ETHUSDT:1m:index",
    "usdm:BTCUSDT:1m:premium",
    "coinm:BTCUSD_PERP:1m:premium",
]


def kind_rows(df: pl.DataFrame, key: StreamKey) -> pl.DataFrame:
    """The rows of one stream: its kind's `market` partition value, its interval and symbol."""
    return df.filter(
        (pl.col("market") == key.partition)
        & (pl.col("interval") == key.interval.path_label)
        & (pl.col("symbol") == key.symbol)
    ).sort("open_time")


def assert_exact_kinds(df: pl.DataFrame, keys: list[StreamKey], min_rows: int = 2) -> None:
    """Every row of each key is the simulator's candle of its kind (NULL volume, taker and
    trades fields where the kind has none), once, with no gap, and each key has min_rows."""
    from kline_tui.sim import stream_candle

    assert set(df["market"].unique()) <= {key.partition for key in keys}
    for key in keys:
        rows = kind_rows(df, key).with_columns(
            pl.col("open_time").dt.epoch("ms"), pl.col("close_time").dt.epoch("ms")
        )
        opens = rows["open_time"].to_list()
        assert len(opens) >= min_rows, f"{key}: only {len(opens)} rows"
        assert len(opens) == len(set(opens)), f"{key}: duplicates"
        for a, b in itertools.pairwise(opens):
            assert key.interval.next_open(a) == b, f"{key}: gap after {a}"
        for got in rows.select(CANDLE_COLUMNS[1:]).iter_rows():
            want = stream_candle(key, got[0]).to_candle().as_row()
            if not key.kind.has_volume:
                want = (*want[:6], None, None, None, None, None)
            assert got == want, f"{key} at {got[0]}: {got} != {want}"


async def test_polled_kinds_are_recorded_exactly_after_each_close(sim, tmp_path):
    keys = [StreamKey.parse(s) for s in POLLED]
    pipeline = fast_pipeline(sim, tmp_path, POLLED)
    await pipeline.start()
    try:
        assert not pipeline.hub.connections  # no WebSocket for these kinds
        ledgers = pipeline.ledger.streams
        await wait_until(
            lambda: all(ledgers[k].accepted_poll >= 4 for k in keys), what="polled closes"
        )
        for key in keys:
            state = pipeline.hub.streams[key]
            assert state.status in (StreamStatus.LIVE, StreamStatus.BACKFILLING), state.status
            assert state.forming is not None and state.error is None
            assert not state.forming.closed  # the poll's last row: the candle forming
    finally:
        report = await pipeline.stop()
    assert report.missing == [] and pipeline.rest.rejected_rows == 0
    # One poll a close (the first at once), a few re-asks at most: 5 history candles come in one
    # backfill call, so polling stays near one weight a candle.
    closes = max(ledgers[k].accepted_poll for k in keys)
    assert pipeline.poller.polls <= len(keys) * (closes + 2) + pipeline.poller.reasks
    assert_exact_kinds(read_dataset(tmp_path), keys, min_rows=9)


async def test_a_polled_stream_recovers_what_failed_polls_missed(sim, tmp_path):
    key = StreamKey.parse("usdm:BTCUSDT:1m:mark")
    pipeline = fast_pipeline(sim, tmp_path, [str(key)])
    await pipeline.start()
    try:
        ledger = pipeline.ledger.streams
        await wait_until(lambda: ledger[key].accepted_poll >= 3, what="first closes")
        held = ledger[key].last
        # The next REST calls are refused (not retried); polls among them fail.
        sim.faults.rest_fail(400, 6, market=Market.USDM)
        await wait_until(lambda: pipeline.poller.failures >= 1, timeout=40, what="a failed poll")
        await wait_until(
            lambda: (
                ledger[key].last is not None
                and ledger[key].last >= key.interval.shift(held, 3)
                and not ledger[key].missing
            ),
            timeout=40,
            what="the missed closes filled",
        )
    finally:
        await pipeline.stop()
    assert_exact_kinds(read_dataset(tmp_path), [key], min_rows=11)


def test_record_refuses_more_polled_streams_than_the_budget_takes(tmp_path):
    from kline_tui.sim import symbol_info, universe

    perpetuals = [
        s
        for s in universe(Market.USDM)
        if (info := symbol_info(Market.USDM, s)) is not None
        and info.trading
        and info.contract_type == "PERPETUAL"
    ]
    specs = [f"usdm:{s}:1m:mark" for s in perpetuals[:1201]]
    assert len(specs) == 1201
    data = tmp_path / "D"
    proc = run_to_end(
        [KLINE_TUI, "record", "--demo", *specs, "usdm:BTCUSDT:1m", "--data-dir", str(data)],
        env_for(tmp_path),
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "1201 streams polled over REST" in lines[0]
    assert "at most 1200 such streams fit" in lines[0]
    assert not data.exists()


async def test_an_add_past_the_polling_budget_is_refused_and_recording_goes_on(
    sim, tmp_path, monkeypatch
):
    from kline_tui.recorder import poller

    monkeypatch.setattr(poller, "POLL_SHARE", 2 / 2400)  # two polled streams fit
    watch = ["usdm:BTCUSDT:1m:mark", "coinm:BTCUSD_PERP:1m:premium", "usdm:ETHUSDT:1m"]
    pipeline = fast_pipeline(sim, tmp_path, watch)
    await pipeline.start()
    try:
        third = StreamKey.parse("usdm:ETHUSDT:1m:premium")
        with pytest.raises(StreamRefused) as refused:
            await pipeline.add([third])
        assert refused.value.problems == [refused.value.problems[0]]
        assert "3 streams polled over REST" in refused.value.problems[0]
        assert "at most 2 such streams fit" in refused.value.problems[0]
        assert third not in pipeline.hub.streams
        # Streamed kinds cost no polls: still accepted.
        assert await pipeline.add([StreamKey.parse("usdm:ETHUSDT:1m:perpetual")])
        ledgers = pipeline.ledger.streams
        before = {k: st.accepted_ws + st.accepted_poll for k, st in ledgers.items()}
        await wait_until(
            lambda: all(st.accepted_ws + st.accepted_poll > before[k] for k, st in ledgers.items()),
            what="every stream recording after the refusal",
        )
    finally:
        await pipeline.stop()


async def test_backfill_cli_fetches_every_kind_exactly(sim, tmp_path, capsys):
    from kline_tui.cli.backfill import main as backfill_main

    cfg = str(write_config(tmp_path / "config.toml", sim.endpoints))
    data = tmp_path / "data"
    now = sim.clock.now_ms()
    day = Interval.D1.open_time_at(now) - 86_400_000  # yesterday, a whole closed day
    specs = [
        "coinm:BTCUSD:1m:index",  # 1,440 rows plus: more than a page's span on COIN-M
        "usdm:BTCUSDT:1h:perpetual",
        "coinm:BTCUSD:1h:next_quarter",
        "usdm:BTCUSDT:1h:premium",
        "coinm:BTCUSD_PERP:1h:mark",
    ]
    frm = time_text(day - 600_000)  # ten minutes before the day: 1,450 1m candles
    to = time_text(day + 86_400_000 - 60_000)
    args = [*specs, "--from", frm, "--to", to, "--data-dir", str(data), "--config", cfg]
    assert await asyncio.to_thread(backfill_main, args) == 0
    out = capsys.readouterr().out
    assert "coinm:BTCUSD:1m:index: 1450 candles" in out and "0 held, 1450 fetched" in out
    keys = [StreamKey.parse(s) for s in specs]
    df = read_dataset(data)
    assert_exact_kinds(df, keys, min_rows=24)
    assert len(kind_rows(df, keys[0])) == 1450
    for argv, words in [
        (["coinm:BTCUSD_PERP:1m:index"], "unknown pair BTCUSD_PERP on coinm"),
        (["usdm:NOPEUSDT:1m:mark"], "usdm has no symbol NOPEUSDT"),
    ]:
        code = await asyncio.to_thread(
            backfill_main, [*argv, "--from", frm, "--data-dir", str(data), "--config", cfg]
        )
        assert code == 2
        assert words in capsys.readouterr().err


def time_text(ms: int) -> str:
    """An exchange time as `--from` and `--to` take it."""
    return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(ms // 1000))


# -- acceptance: `kline-tui record` of every kind, as a user runs it ------------------------------

EVERY_KIND = [
    "usdm:BTCUSDT:1m:mark",
    "coinm:BTCUSD:1m:index",
    "usdm:BTCUSDT:1m:perpetual",
    "usdm:BTCUSDT:1m:premium",
    "coinm:BTCUSD_PERP:1m:mark",
]


def test_record_demo_of_every_kind_then_sigterm_is_exact(tmp_path):
    data = tmp_path / "D"
    env = env_for(tmp_path)
    code, err = run_for(
        [KLINE_TUI, "record", "--demo", "--demo-speed", "60", *EVERY_KIND, "--data-dir", str(data)],
        10.0,
        env,
    )
    assert code == 0, err
    assert "Traceback" not in err and "malformed" not in err and "impossible" not in err, err
    keys = [StreamKey.parse(s) for s in EVERY_KIND]
    df = read_dataset(data)
    assert_exact_kinds(df, keys, min_rows=1000)  # the history and what closed live
    # Each kind in its own partition, as a reader's filter sees it; NULLs only where none exist.
    assert sorted(df["market"].unique()) == sorted({k.partition for k in keys})
    assert df.filter(pl.col("market") == "usdm-perpetual")["volume"].null_count() == 0
    assert df.filter(pl.col("market") == "coinm-index")["trades"].null_count() > 0
    verify = run_to_end([KLINE_TUI, "verify", "--data-dir", str(data)], env, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    for spec in EVERY_KIND:
        assert f"{spec} " in verify.stdout


async def test_chaos_short_with_every_kind(tmp_path):
    """The chaos suite's faults (kill -9 included) on a recorder of every kind: the dataset is
    the simulator's, contiguous, once, and reaches the stop."""
    from kline_tui.sim import Simulator

    from .test_chaos import FAULT_KINDS, ChaosReport, Recorder, _calm, _inject_one

    rng = random.Random(20261130)
    keys = [StreamKey.parse(s) for s in EVERY_KIND]
    names = [k.stream_name for k in keys if k.has_stream]
    data, log = tmp_path / "data", tmp_path / "recorder.log"
    report = ChaosReport()
    async with Simulator(speed=60, offset_ms=3_600_000) as sim:
        config = write_config(
            tmp_path / "chaos.toml",
            sim.endpoints,
            data_dir=data,
            watch=EVERY_KIND,
            recorder={"flush_age_s": 1, "history": 20, "reconnect_max_s": 4},
        )
        rec = Recorder(config, log)
        await rec.start()
        started = sim.clock.now_ms()
        await asyncio.sleep(3)
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            await asyncio.sleep(rng.expovariate(1 / 1.5))
            forced = None if report.faults["kill9"] or deadline - time.monotonic() > 12 else "kill9"
            await _inject_one(sim, rng, report, names, rec, forced)
            if rng.random() < 0.2:
                _calm(sim)
        _calm(sim)
        await asyncio.sleep(12)  # reconnect, poll and backfill
        stopped = sim.clock.now_ms()
        code = await rec.stop()
    text = log.read_text()
    assert code == 0 and "Traceback" not in text, text[-3000:]
    assert report.faults["kill9"] >= 1 and set(report.faults) <= set(FAULT_KINDS)
    df = read_dataset(data)
    assert_exact_kinds(df, keys, min_rows=20)
    for key in keys:
        opens = kind_rows(df, key)["open_time"].dt.epoch("ms")
        assert opens.min() <= key.interval.open_time_at(started), key
        assert opens.max() >= key.interval.open_time_at(stopped) - 4 * 60_000, key


async def test_the_service_api_adds_every_kind_and_refuses_a_bad_one(sim, tmp_path):
    from .service_support import USDM, call, live, serve

    async with serve(sim, tmp_path, watch=USDM[:1]) as served:
        await live(served)
        url = served.url + "/api/v1/streams"
        status, body, _ = await call("POST", url, json={"streams": EVERY_KIND})
        assert status == 200 and sorted(body["added"]) == sorted(EVERY_KIND)
        hub = served.hub
        await wait_until(
            lambda: all(
                hub.streams[StreamKey.parse(s)].status
                in (StreamStatus.LIVE, StreamStatus.BACKFILLING)
                for s in EVERY_KIND
            ),
            what="every kind live",
        )
        for spec, words in [
            ("coinm:BTCUSD_PERP:1m:index", "unknown pair BTCUSD_PERP on coinm"),
            ("usdm:BTCUSD:1m:perpetual", "unknown pair BTCUSD on usdm"),
        ]:
            status, body, _ = await call("POST", url, json={"streams": [spec]})
            assert status == 422 and len(body["problems"]) == 1, body
            assert words in body["problems"][0]
        status, body, _ = await call("POST", url, json={"streams": ["spot:BTCUSDT:1m:mark"]})
        assert status == 400 and "spot has no mark klines" in body["error"]


async def test_hostile_kind_frames_are_counted_and_dropped(sim, tmp_path):
    """Frames of the right shape on a kind's stream that name another series, carry volume
    where the kind has none, or cannot be real: counted, never stored, never a crash."""
    watch = ["coinm:BTCUSD_PERP:1m:mark", "coinm:BTCUSD:1m:index", "usdm:BTCUSDT:1m:perpetual"]
    keys = [StreamKey.parse(s) for s in watch]
    pipeline = fast_pipeline(sim, tmp_path, watch)
    await pipeline.start()
    try:
        ledgers = pipeline.ledger.streams
        await wait_until(lambda: all(ledgers[k].accepted_ws >= 2 for k in keys), what="live")
        now = sim.clock.now_ms()
        t = Interval.M1.open_time_at(now)
        k = K_FIELDS.format(o="1", c="1", h="1", l="1", v="0", x="false")
        k = k.replace("1719765480000", str(t)).replace("1719765539999", str(t + M - 1))
        with_volume = k.replace('"v":"0"', '"v":"5"')
        hostile = [
            (
                Market.COINM,
                "btcusd_perp@markPriceKline_1m",
                "markPrice_kline",
                '"ps":"ETHUSD"',
                f'"s":"ETHUSD_PERP",{k}',
            ),
            (
                Market.COINM,
                "btcusd_perp@markPriceKline_1m",
                "markPrice_kline",
                '"ps":"BTCUSD"',
                f'"s":"BTCUSD_PERP",{with_volume}',
            ),
            (
                Market.COINM,
                "btcusd@indexPriceKline_1m",
                "indexPrice_kline",
                '"ps":"ETHUSD"',
                f'"s":"0",{k}',
            ),
            (
                Market.USDM,
                "btcusdt_perpetual@continuousKline_1m",
                "continuous_kline",
                '"ps":"BTCUSDT","ct":"NEXT_QUARTER"',
                k,
            ),
            (
                Market.USDM,
                "btcusdt_perpetual@continuousKline_1m",
                "continuous_kline",
                '"ps":"BTCUSDT","ct":"PERPETUAL"',
                k.replace(str(t), str(t + 86_400_000 * 400)),
            ),
        ]
        before = pipeline.hub.malformed
        for market, stream, event, top, fields in hostile:
            text = (
                f'{{"stream":"{stream}","data":{{"e":"{event}","E":{now},{top},"k":{{{fields}}}}}}}'
            )
            await sim.faults.inject(text, market)
        await wait_until(
            lambda: pipeline.hub.malformed >= before + len(hostile), what="every frame counted"
        )
        await wait_until(lambda: all(ledgers[k].accepted_ws >= 4 for k in keys), what="more")
    finally:
        await pipeline.stop()
    assert pipeline.hub.malformed == before + len(hostile)
    assert_exact_kinds(read_dataset(tmp_path), keys, min_rows=8)


async def test_an_attached_ui_mirrors_every_kind_premium_included(sim, tmp_path):
    """The service's mirror keeps the closed and forming candles of each kind, by its kind's
    rules: a premium index is negative, and must not be taken for an impossible price."""
    from kline_tui.recorder.events import EventLog
    from kline_tui.retry import Backoff
    from kline_tui.service.client import RemoteRecorder

    from .service_support import TOKEN, serve

    async with serve(sim, tmp_path, watch=EVERY_KIND, flush_age_s=3600.0) as served:
        client = RemoteRecorder(served.url, TOKEN, EventLog(), backoff=Backoff(0.1, 0.5))
        task = asyncio.create_task(client.run())
        try:
            await asyncio.wait_for(client.wait_connected(), 10)
            hub = served.hub
            await wait_until(
                lambda: all(len(client.streams[k].closed) >= 3 for k in hub.streams),
                what="closed candles of every kind mirrored",
            )
            for key, theirs in hub.streams.items():
                mine = client.streams[key]
                want = [c.as_row() for c in theirs.closed][-len(mine.closed) :]
                assert [c.as_row() for c in mine.closed] == want, key
                assert mine.forming is not None, key
            premium = client.streams[StreamKey.parse("usdm:BTCUSDT:1m:premium")]
            assert min(c.low for c in premium.closed) < 0  # the simulator's are mostly negative
        finally:
            await client.close()
            await asyncio.wait_for(task, 5)


async def test_the_simulators_poison_on_every_kind_never_reaches_the_dataset(sim, tmp_path):
    """Impossible events of every shape on the kinds' streams, impossible rows in every kind's
    REST answers (polls and backfills): counted and dropped; the dataset is the exchange's."""
    keys = [StreamKey.parse(s) for s in EVERY_KIND]
    streams = [k.stream_name for k in keys if k.has_stream]
    sim.faults.poison(1.0, streams=streams)
    sim.faults.poison_rest(0.2)
    pipeline = fast_pipeline(sim, tmp_path, EVERY_KIND, history=30)
    await pipeline.start()
    try:
        ledgers = pipeline.ledger.streams
        await wait_until(
            lambda: all(ledgers[k].accepted_ws + ledgers[k].accepted_poll >= 5 for k in keys),
            timeout=60,
            what="closes of every kind through the poison",
        )
    finally:
        await pipeline.stop()
    assert pipeline.hub.malformed > 0 and pipeline.rest.rejected_rows > 0
    assert_exact_kinds(read_dataset(tmp_path), keys, min_rows=30)


async def test_a_service_start_leaves_out_the_polled_streams_past_the_budget(
    sim, tmp_path, monkeypatch
):
    from kline_tui.recorder import poller
    from kline_tui.retry import Backoff
    from kline_tui.runtime import Runtime

    from .support import make_settings

    monkeypatch.setattr(poller, "POLL_SHARE", 1 / 2400)  # one polled stream fits
    watch = ["usdm:BTCUSDT:1m:mark", "usdm:ETHUSDT:1m:premium", "coinm:BTCUSD:1m:index"]
    runtime = Runtime(
        make_settings(sim, tmp_path, watch, history=3), backoff=Backoff(base=0.2, cap=1.0)
    )
    try:
        keys = await runtime.start(leave_out_refused=True)
        assert [str(k) for k in keys] == ["usdm:BTCUSDT:1m:mark", "coinm:BTCUSD:1m:index"]
        lines = [e.message for e in runtime.events.recent]
        assert any("at most 1 such streams fit" in line for line in lines), lines
    finally:
        await runtime.stop()

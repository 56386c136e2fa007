"""The details view's history and timeframes: a day of 1m candles recorded into a real dataset
(through backfill, the store's write path, from the simulator's REST), read back a page at a
time, resampled to longer candles and checked against an aggregation written here as a plain
loop; the same pages through the service API on loopback; and the view scrolling back to the
first recorded candle, in this process and attached."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from kline_tui.binance.rest import RestClient
from kline_tui.config import Settings
from kline_tui.model import Interval, StreamKey
from kline_tui.retry import Backoff
from kline_tui.service.client import RemoteRecorder
from kline_tui.store.candle_pages import read_page
from kline_tui.store.dataset import open_dataset
from kline_tui.store.history import backfill
from kline_tui.store.resample import CANDLES_SCHEMA, bars, resample, timeframes_of, with_forming
from kline_tui.ui import format as fmt
from kline_tui.ui.app import KlineApp
from kline_tui.ui.recorder import AttachedRecorder
from kline_tui.ui.screens.details import DetailsScreen
from kline_tui.ui.widgets.candle_chart import CandleChart

from .datasets import read_dataset, stream_rows
from .service_support import AUTH, TOKEN, call, serve
from .support import make_settings, wait_until

MINUTE = 60_000
DAY = 1440 * MINUTE
# The exchange clock stands still at 2026-11-18 14:03:17 UTC: no candle closes during a test,
# so what the dataset holds and what the view shows are known exactly.
NOW = 1_795_010_597_000
FROZEN = pytest.mark.simulator(speed=0, start_ms=NOW)
BTC = StreamKey.parse("usdm:BTCUSDT:1m")
LAST = Interval.M1.open_time_at(NOW) - MINUTE  # the last closed candle
FIRST = LAST - DAY + MINUTE  # a day of them: 1,440
COLUMNS = list(CANDLES_SCHEMA)


async def record_a_day(sim, data: Path, key: StreamKey = BTC) -> None:
    rest = RestClient(sim.endpoints)
    try:
        result = await backfill(data, key, rest, FIRST, LAST)
    finally:
        await rest.close()
    assert result.written == 1440


def recorded(data: Path, key: StreamKey = BTC) -> pl.DataFrame:
    """The stream's rows as a plain glob read sees them, as epoch ms, oldest first."""
    rows = stream_rows(read_dataset(data), key).sort("open_time")
    return rows.select(
        pl.col("open_time").dt.epoch("ms"), pl.col("close_time").dt.epoch("ms"), *COLUMNS[2:]
    )


def fixed(step: int) -> Callable[[int], tuple[int, int]]:
    """The bounds of the `step` ms bucket an open time falls in, from the epoch."""
    return lambda t: (t - t % step, t - t % step + step)


def loop_aggregate(rows: list[dict], bounds: Callable[[int], tuple[int, int]]) -> list[dict]:
    """Buckets aggregated by hand, `bounds(open_time)` giving the open time of a candle's bucket
    and of the next one: first open, max high, min low, last close, summed volumes and trades,
    and how many candles each holds."""
    out: list[dict] = []
    for r in rows:
        start, after = bounds(r["open_time"])
        if not out or out[-1]["open_time"] != start:
            out.append(
                {
                    "open_time": start,
                    "close_time": after - 1,
                    "open": r["open"],
                    "high": r["high"],
                    "low": r["low"],
                    "close": r["close"],
                    "volume": 0.0,
                    "quote_volume": 0.0,
                    "taker_buy_volume": 0.0,
                    "taker_buy_quote_volume": 0.0,
                    "trades": 0,
                    "candles": 0,
                }
            )
        b = out[-1]
        b["high"] = max(b["high"], r["high"])
        b["low"] = min(b["low"], r["low"])
        b["close"] = r["close"]
        for name in ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume"):
            b[name] += r[name]
        b["trades"] += r["trades"]
        b["candles"] += 1
    return out


# -- resampling ---------------------------------------------------------------------------------


@FROZEN
async def test_a_day_of_1m_as_1h_equals_a_plain_loop(sim, tmp_path):
    data = tmp_path / "data"
    await record_a_day(sim, data)
    page = read_page(open_dataset(data), BTC, limit=5000)
    assert page.next_ms is None and len(page.frame) == 1440
    rows = recorded(data).to_dicts()
    assert page.frame.to_dicts() == rows  # the reader gives what a glob read gives

    for target in (Interval.M5, Interval.M15, Interval.H1, Interval.H4, Interval.D1):
        got = resample(page.frame, target).to_dicts()
        want = loop_aggregate(rows, fixed(target.ms or 0))
        assert got == want, target  # every field, exactly (sums in the same order)
    hours = resample(page.frame, Interval.H1)
    # A day from 14:03 to 14:03: 25 hours, the first and the last partial.
    assert len(hours) == 25 and hours["candles"].sum() == 1440
    assert hours["candles"][0] == 60 - FIRST % 3_600_000 // MINUTE


@FROZEN
async def test_the_forming_bucket_is_included_and_the_live_candle_joins_it(sim, tmp_path):
    data = tmp_path / "data"
    await record_a_day(sim, data)
    frame = read_page(open_dataset(data), BTC, limit=5000).frame
    rows = frame.to_dicts()
    # Cut 23 minutes into an hour: the last bucket holds 23 candles and is still there.
    cut = next(i for i, r in enumerate(rows) if r["open_time"] % 3_600_000 == 0) + 23 + 60
    closed, forming = frame.head(cut - 1), frame.slice(cut - 1, 1)
    partial = resample(frame.head(cut), Interval.H1)
    assert partial["candles"][-1] == 23
    assert partial.to_dicts() == loop_aggregate(rows[:cut], fixed(3_600_000))
    # The live candle folded into the resampled closed ones: the same buckets.
    joined = with_forming(closed, resample(closed, Interval.H1), forming, Interval.H1)
    assert joined.to_dicts() == partial.to_dicts()
    # A live candle opening a new bucket adds it.
    first_of_hour = frame.slice(cut - 23, 1)
    assert first_of_hour["open_time"][0] % 3_600_000 == 0
    before = frame.head(cut - 23)
    opened = with_forming(before, resample(before, Interval.H1), first_of_hour, Interval.H1)
    assert opened.to_dicts() == loop_aggregate(rows[: cut - 22], fixed(3_600_000))
    shown = bars(opened, forming_from=int(first_of_hour["open_time"][0]))
    assert [b.forming for b in shown[-2:]] == [False, True] and shown[-1].candles == 1


def test_kinds_without_volume_keep_it_null_and_timeframes_fit_the_interval():
    opens = [i * MINUTE for i in range(120)]
    frame = pl.DataFrame(
        {
            "open_time": opens,
            "close_time": [t + MINUTE - 1 for t in opens],
            "open": [100.0 + i for i in range(120)],
            "high": [101.0 + i for i in range(120)],
            "low": [99.0 + i for i in range(120)],
            "close": [100.5 + i for i in range(120)],
        }
    ).with_columns(
        *(
            pl.lit(None).alias(c)
            for c in ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")
        ),
        pl.lit(None).alias("trades"),
    )
    hours = resample(frame.cast(CANDLES_SCHEMA), Interval.H1)
    assert hours["volume"].to_list() == [None, None] and hours["trades"].null_count() == 2
    assert hours["open"].to_list() == [100.0, 160.0] and hours["close"].to_list() == [159.5, 219.5]
    assert timeframes_of(Interval.M1) == (
        Interval.M1,
        Interval.M5,
        Interval.M15,
        Interval.H1,
        Interval.H4,
        Interval.D1,
    )
    assert timeframes_of(Interval.H1) == (
        Interval.H1,
        Interval.H4,
        Interval.D1,
        Interval.W1,
        Interval.MO1,  # 744 candles in a 31-day month
    )
    assert timeframes_of(Interval.D1) == (Interval.D1, Interval.W1, Interval.MO1)
    assert Interval.MO1 not in timeframes_of(Interval.M30)  # 1,488 candles a month
    assert timeframes_of(Interval.D3) == (Interval.D3,)  # 3 days fill no week, no month
    assert timeframes_of(Interval.M15)[-1] is Interval.W1  # 672 candles a week
    assert Interval.W1 not in timeframes_of(Interval.M5)  # 2,016 a week is too many
    assert Interval.H1 not in timeframes_of(Interval.S1)  # 3,600 candles a bucket is too many


def test_hours_as_weeks_start_on_mondays_and_equal_a_plain_loop():
    """Five weeks of 1h candles from a Thursday 13:00 UTC: weeks open on Monday 00:00 UTC, as
    the exchange's `1w` candles do (not on the epoch's Thursday), checked against a loop that
    finds each Monday with the calendar."""
    import datetime as dt

    hour = 3_600_000
    start = int(dt.datetime(2026, 10, 1, 13, tzinfo=dt.UTC).timestamp() * 1000)
    rows = [
        {
            "open_time": t,
            "close_time": t + hour - 1,
            "open": 100.0 + i,
            "high": 100.0 + i + (i * 7) % 5,
            "low": 99.0 + i - (i * 3) % 4,
            "close": 100.5 + i,
            "volume": 0.1 * (i % 13),
            "quote_volume": 10.0 * (i % 7),
            "taker_buy_volume": 0.05 * (i % 11),
            "taker_buy_quote_volume": 5.0 * (i % 5),
            "trades": i % 17,
        }
        for i in range(24 * 7 * 5)
        for t in [start + i * hour]
    ]

    def week_bounds(ms: int) -> tuple[int, int]:
        day = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date()
        monday = day - dt.timedelta(days=day.weekday())
        opens = int(dt.datetime(monday.year, monday.month, monday.day, tzinfo=dt.UTC).timestamp())
        return opens * 1000, opens * 1000 + 7 * 24 * hour

    weeks = loop_aggregate(rows, week_bounds)
    frame = pl.DataFrame(rows).cast(CANDLES_SCHEMA)
    got = resample(frame, Interval.W1).to_dicts()
    assert got == weeks  # every field, exactly
    assert [w["candles"] for w in got] == [83, 168, 168, 168, 168, 85]
    # The live candle joins the forming week.
    closed, forming = frame.head(len(rows) - 1), frame.tail(1)
    joined = with_forming(closed, resample(closed, Interval.W1), forming, Interval.W1)
    assert joined.to_dicts() == weeks


def test_hours_as_months_are_calendar_months_and_equal_a_plain_loop():
    """Seventy days of 1h candles from 14 January 13:00 UTC as months: each opens on the 1st at
    00:00 UTC and closes with the month (28 days for February), as the exchange's `1M` does,
    checked against a loop that reads the month off the calendar. Weeks fill no month whole."""
    import datetime as dt

    hour = 3_600_000
    start = int(dt.datetime(2026, 1, 14, 13, tzinfo=dt.UTC).timestamp() * 1000)
    rows = [
        {
            "open_time": t,
            "close_time": t + hour - 1,
            "open": 50.0 + (i * 13) % 29,
            "high": 80.0 + (i * 7) % 5,
            "low": 40.0 - (i * 3) % 4,
            "close": 50.5 + (i * 11) % 23,
            "volume": 0.1 * (i % 13),
            "quote_volume": 10.0 * (i % 7),
            "taker_buy_volume": 0.05 * (i % 11),
            "taker_buy_quote_volume": 5.0 * (i % 5),
            "trades": i % 17,
        }
        for i in range(24 * 70)
        for t in [start + i * hour]
    ]

    def month_bounds(ms: int) -> tuple[int, int]:
        day = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        first = dt.datetime(day.year, day.month, 1, tzinfo=dt.UTC)
        after = dt.datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=dt.UTC)
        return int(first.timestamp() * 1000), int(after.timestamp() * 1000)

    months = loop_aggregate(rows, month_bounds)
    frame = pl.DataFrame(rows).cast(CANDLES_SCHEMA)
    got = resample(frame, Interval.MO1, own=Interval.H1).to_dicts()
    assert got == months  # every field, exactly
    assert [m["candles"] for m in got] == [18 * 24 - 13, 28 * 24, 24 * 70 - 18 * 24 + 13 - 28 * 24]
    # The live candle joins the forming month.
    closed, forming = frame.head(len(rows) - 1), frame.tail(1)
    buckets = resample(closed, Interval.MO1, own=Interval.H1)
    assert with_forming(closed, buckets, forming, Interval.MO1, own=Interval.H1).to_dicts() == (
        months
    )
    with pytest.raises(ValueError, match="do not fill"):
        resample(frame, Interval.MO1, own=Interval.W1)


# -- reading pages ------------------------------------------------------------------------------


@FROZEN
async def test_pages_back_and_forth_return_every_candle_once_in_order(sim, tmp_path):
    data = tmp_path / "data"
    await record_a_day(sim, data)
    dataset = open_dataset(data)
    want = recorded(data)["open_time"].to_list()

    back: list[int] = []
    end = None
    while True:
        page = read_page(dataset, BTC, end_ms=end, limit=500, newest_first=True)
        opens = page.frame["open_time"].to_list()
        assert opens == sorted(opens) and len(opens) <= 500
        back = opens + back
        if page.next_ms is None:
            break
        end = page.next_ms
    assert back == want and back[0] == FIRST

    forth: list[int] = []
    start = FIRST - 7 * DAY  # before anything: the window widens until it finds the rows
    while start is not None:
        page = read_page(dataset, BTC, start_ms=start, end_ms=LAST + MINUTE, limit=333)
        forth += page.frame["open_time"].to_list()
        start = page.next_ms
    assert forth == want
    with pytest.raises(ValueError):
        read_page(dataset, BTC, limit=0)


# -- the service API ----------------------------------------------------------------------------


@FROZEN
async def test_the_api_pages_the_dataset_and_refuses_bad_parameters(sim, tmp_path):
    data = tmp_path / "data"
    await record_a_day(sim, data)
    want = recorded(data)
    async with serve(sim, data, [str(BTC)], history=0) as served:
        url = served.url + "/api/v1/candles"
        got: list[list] = []
        start = str(FIRST)
        while start is not None:
            status, body, _ = await call("GET", f"{url}?stream={BTC}&start={start}&limit=1500")
            assert status == 200 and body["stream"] == str(BTC) and len(body["candles"]) <= 1500
            got += body["candles"]
            start = body["next"]
        assert [tuple(r) for r in got] == list(want.iter_rows())  # every row once, in order

        desc: list[list] = []
        end = None
        while True:
            query = f"?stream={BTC}&order=desc&limit=400" + (f"&end={end}" if end else "")
            status, body, _ = await call("GET", url + query)
            assert status == 200
            desc = body["candles"] + desc
            end = body["next"]
            if end is None:
                break
        assert [r[0] for r in desc] == want["open_time"].to_list()

        status, body, _ = await call("GET", f"{url}?stream={BTC}", headers=None)
        assert status == 401
        for query, words in [
            ("", "stream is required"),
            ("?stream=usdm:BTCUSDT:7m", "unknown interval"),
            (f"?stream={BTC}&limit=0", "limit must be"),
            (f"?stream={BTC}&limit=1501", "limit must be"),
            (f"?stream={BTC}&limit=ten", "limit must be"),
            (f"?stream={BTC}&start=yesterday", "start must be"),
            (f"?stream={BTC}&end=99999999999999999999999", "end must be"),
            (f"?stream={BTC}&start=2026-11-18&end=2026-11-17", "end must be after start"),
            (f"?stream={BTC}&order=sideways", "order must be"),
            (f"?stream={BTC}&limt=5", "unknown parameter"),
            ("?stream=" + "x" * 100, "too long"),
        ]:
            status, body, _ = await call("GET", url + query)
            assert status == 400, query
            assert words in body["error"] and "\n" not in body["error"], query

        # The client the attached UI uses: the same rows, a page of at most 1,500 at a time.
        client = RemoteRecorder(served.url, TOKEN)
        try:
            recorder = AttachedRecorder(client, served.url, Settings(tmp_path / "ui.toml", False))
            page = await recorder.read_candles(BTC, limit=5000, newest_first=True)
            assert page.next_ms is None and page.frame.equals(want)
            page = await recorder.read_candles(BTC, end_ms=LAST, limit=100, newest_first=True)
            assert page.frame["open_time"].to_list() == want["open_time"].to_list()[-101:-1]
            assert page.next_ms == LAST - 100 * MINUTE
        finally:
            await client.close()
    assert AUTH  # the token the calls above sent


# -- the view -----------------------------------------------------------------------------------


async def open_details(app: KlineApp, pilot) -> DetailsScreen:
    await app.wait_started()
    await wait_until(lambda: app.table.selected == BTC, what="the stream's row")
    await pilot.press("enter")
    await wait_until(lambda: isinstance(app.screen, DetailsScreen), what="the details view")
    screen = app.screen
    assert isinstance(screen, DetailsScreen)
    await wait_until(lambda: screen.view is not None and screen.view.bars, what="candles")
    return screen


async def scroll_to_first(screen: DetailsScreen, pilot) -> list[int]:
    """Page back until the view stops at the first recorded candle; the open times shown on
    the way, oldest first."""
    seen: set[int] = set()
    for _ in range(200):
        view = screen.view
        assert view is not None
        seen.update(b.open_time for b in view.bars)
        if screen.at_first and view.left == 0 and screen._loading is None:
            break
        await pilot.press("pageup")
        await wait_until(lambda: screen._loading is None, what="the page to load")
        await pilot.pause()
    else:
        raise AssertionError("never reached the first recorded candle")
    return sorted(seen)


async def check_the_view(app: KlineApp, pilot, want: pl.DataFrame) -> None:
    """Back to the first candle, every candle of the day seen on the way; 1h candles that
    equal the loop's; a date typed and jumped to; back to live."""
    screen = await open_details(app, pilot)
    chart = screen.query_one(CandleChart)
    seen = await scroll_to_first(screen, pilot)
    assert chart.bars[0].open_time == FIRST  # the first recorded candle, at the left edge
    assert set(want["open_time"].to_list()) <= set(seen)  # nothing skipped on the way
    assert "◂ first" in screen.readout.plain  # in short at 80x24: "◂ first recorded candle"
    by_open = {r["open_time"]: r for r in want.to_dicts()}
    for bar in chart.bars:
        row = by_open[bar.open_time]
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (
            row["open"],
            row["high"],
            row["low"],
            row["close"],
            row["volume"],
        )

    # 1h: the buckets shown equal the loop's aggregation of the recorded rows.
    await pilot.press("4")
    await wait_until(lambda: screen.timeframe is Interval.H1, what="1h")
    await pilot.pause()
    hours = {b["open_time"]: b for b in loop_aggregate(want.to_dicts(), fixed(3_600_000))}
    shown = [b for b in chart.bars if not b.forming]
    assert shown and shown[0].open_time == Interval.H1.open_time_at(FIRST)
    for bar in shown[:-1]:  # the last may hold live candles the dataset has not yet
        b = hours[bar.open_time]
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trades, bar.candles) == (
            b["open"],
            b["high"],
            b["low"],
            b["close"],
            b["volume"],
            b["trades"],
            b["candles"],
        )
    # The crosshair reads out the candle under it.
    assert screen.view is not None
    before = screen.view.cursor
    await pilot.press("right", "right")
    view = screen.view
    assert view is not None and view.cursor == before + 2
    bar = view.bars[before + 2]
    assert f"H {fmt.price(bar.high)}" in screen.readout.plain

    # g: a date typed (UTC) is jumped to, the crosshair on its candle.
    target = FIRST + 5 * 3_600_000
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(target / 1000))
    await pilot.press("g", *when, "enter")
    hour = Interval.H1.open_time_at(target)
    await wait_until(
        lambda: (
            screen.view is not None
            and screen.view.bars
            and screen.view.bars[screen.view.cursor].open_time == hour
        ),
        what="the date jumped to",
    )
    # end: live again, the crosshair on the forming hour.
    await pilot.press("end")
    await wait_until(lambda: screen._loading is None, what="live history")
    await pilot.pause()
    view = screen.view
    assert view is not None and view.right == view.count - 1
    assert view.bars[view.cursor].open_time == Interval.H1.open_time_at(NOW)
    # The live forming candle joined the newest hour: 14:00, 14:01, 14:02 recorded, 14:03 live.
    newest, live_candle = view.bars[-1], app.recorder.streams[BTC].forming
    assert live_candle is not None and newest.forming and newest.candles == 4
    assert newest.close == live_candle.close and newest.high >= live_candle.high
    assert newest.open == by_open[Interval.H1.open_time_at(NOW)]["open"]


@FROZEN
async def test_the_details_view_reaches_the_first_recorded_candle_at_80x24(sim, tmp_path):
    data = tmp_path / "data"
    await record_a_day(sim, data)
    want = recorded(data)
    app = KlineApp(make_settings(sim, data, [str(BTC)], history=0, flush_age_s=600.0))
    async with app.run_test(size=(80, 24)) as pilot:
        await check_the_view(app, pilot, want)
        await pilot.press("escape", "q")
        await wait_until(lambda: app.return_code is not None, what="the app to quit")


@FROZEN
async def test_the_attached_details_view_reads_the_dataset_through_the_api(sim, tmp_path):
    data = tmp_path / "data"
    await record_a_day(sim, data)
    want = recorded(data)
    async with serve(sim, data, [str(BTC)], history=0, flush_age_s=600.0) as served:
        client = RemoteRecorder(served.url, TOKEN, backoff=Backoff(base=0.1, cap=0.5))
        settings = Settings(tmp_path / "ui.toml", False)
        app = KlineApp(settings, recorder=AttachedRecorder(client, served.url, settings))
        async with app.run_test(size=(200, 60)) as pilot:
            await check_the_view(app, pilot, want)
            await pilot.press("escape", "q")
            await wait_until(lambda: app.return_code is not None, what="the UI to close")


async def test_the_volume_pane_is_left_out_for_kinds_without_volume():
    from textual.app import App, ComposeResult

    from kline_tui.store.resample import Bar

    class ChartApp(App[None]):
        def compose(self) -> ComposeResult:
            yield CandleChart()

    shown = [
        Bar(
            i * MINUTE,
            i * MINUTE + MINUTE - 1,
            100.0 + i,
            102.0 + i,
            99.0 + i,
            101.0 + i,
            volume,
            None,
            1,
        )
        for i, volume in enumerate([300.0, 600.0, 100.0, 1200.0, 50.0])
    ]
    app = ChartApp()
    async with app.run_test(size=(60, 20)) as pilot:
        chart = app.query_one(CandleChart)

        def lines() -> list[str]:
            chart._lines = None
            return [chart.render_line(y).text for y in range(chart.size.height)]

        chart.show(shown, Interval.M1, cursor=1, volume=True)
        await pilot.pause()
        with_volume = lines()
        assert any(f"┤ {fmt.compact(1200.0)}" in line for line in with_volume)  # its scale
        assert "▁" in "".join(with_volume)  # the smallest volumes, in eighths
        assert with_volume[-1].count(" 00:01 ") == 1  # the crosshair's time on the axis

        chart.show(shown, Interval.M1, cursor=1, volume=False)  # mark, index, premium
        await pilot.pause()
        without = lines()
        assert not any(fmt.compact(1200.0) in line for line in without)
        assert "▁" not in "".join(without)


@FROZEN
async def test_paging_forward_from_the_first_candle_keeps_a_bounded_history(
    sim, tmp_path, monkeypatch
):
    from kline_tui.ui.screens import details

    monkeypatch.setattr(details, "MAX_HISTORY_ROWS", 700)  # a day is 1,440: the far side goes
    data = tmp_path / "data"
    await record_a_day(sim, data)
    want = recorded(data)["open_time"].to_list()
    app = KlineApp(make_settings(sim, data, [str(BTC)], history=0, flush_age_s=600.0))
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await open_details(app, pilot)
        await pilot.press("home")
        await wait_until(
            lambda: screen._loading is None and screen.view is not None and screen.view.bars,
            what="the first page",
        )
        assert screen.query_one(CandleChart).bars[0].open_time == FIRST
        seen: list[int] = []
        for _ in range(200):
            view = screen.view
            assert view is not None and len(screen._history) <= 700
            seen += [b.open_time for b in view.bars if b.open_time not in seen]
            if screen._loaded_to is None and view.right == view.count - 1:
                break
            await pilot.press("pagedown")
            await wait_until(lambda: screen._loading is None, what="the next page")
            await pilot.pause()
        else:
            raise AssertionError("never came back to live")
        assert seen == sorted(seen) and set(want) <= set(seen)  # in order, nothing skipped
        # The oldest rows were let go of on the way: going back reads them again.
        assert not screen.at_first
        # A date that is not one is said, and the view stays.
        await pilot.press("g", *"yesterday", "enter")
        await pilot.pause()
        assert isinstance(app.screen, DetailsScreen)
        assert any("Not a date" in str(n.message) for n in app._notifications)
        await pilot.press("escape")  # closes the box, not the view
        assert isinstance(app.screen, DetailsScreen)


# -- bounded reads, month streams, work off the loop --------------------------------------------


def write_with_a_hole(data: Path, key: StreamKey, count: int, hole_at: int, hole: int) -> list[int]:
    """`count` candles of `key` every interval from 2025-01-01, the last `count - hole_at` of
    them `hole` ms later (a hole in the data); their open times."""
    from kline_tui.store.schema import PARQUET_SCHEMA

    step = key.interval.ms
    assert step is not None
    opens = [1_735_689_600_000 + i * step + (hole if i >= hole_at else 0) for i in range(count)]
    t = pl.Series(opens, dtype=pl.Int64)
    frame = pl.DataFrame(
        {
            "symbol": key.symbol,
            "open_time": pl.from_epoch(t, "ms").dt.replace_time_zone("UTC"),
            "close_time": pl.from_epoch(t + step - 1, "ms").dt.replace_time_zone("UTC"),
            "open": 1.0,
            "high": 2.0,
            "low": 0.5,
            "close": pl.Series(range(count), dtype=pl.Float64),
            "volume": 1.0,
            "quote_volume": 1.0,
            "taker_buy_volume": 0.5,
            "taker_buy_quote_volume": 0.5,
            "trades": 3,
            "source": "rest",
        }
    ).cast(PARQUET_SCHEMA)
    dataset = open_dataset(data)
    dataset.acquire()
    try:
        dataset.write_frame(key.market, key.interval, frame)
    finally:
        dataset.release()
    return opens


def test_a_page_holds_only_what_it_needs_whatever_the_open_side_or_a_hole(tmp_path, monkeypatch):
    opens = write_with_a_hole(tmp_path / "data", BTC, 3000, 2900, 30 * DAY)
    dataset = open_dataset(tmp_path / "data")
    collected: list[int] = []
    collect = pl.LazyFrame.collect

    def counting(self, *args, **kwargs):
        frame = collect(self, *args, **kwargs)
        collected.append(frame.height)
        return frame

    monkeypatch.setattr(pl.LazyFrame, "collect", counting)
    in_hole = opens[2899] + 10 * DAY
    cases: list[tuple[dict[str, Any], list[int], int | None]] = [  # query, rows, cursor
        ({"newest_first": True}, opens[-100:], opens[-100]),
        ({"newest_first": True, "end_ms": 4_102_444_800_000}, opens[-100:], opens[-100]),
        ({"newest_first": True, "end_ms": in_hole}, opens[2800:2900], opens[2800]),
        ({"newest_first": True, "end_ms": opens[2950]}, opens[2851:2950], opens[2851]),
        ({}, opens[:100], opens[100]),
        ({"start_ms": in_hole}, opens[2900:3000], None),
        ({"start_ms": opens[2850]}, opens[2850:2950], opens[2950]),
    ]
    for query, want, cursor in cases:
        collected.clear()
        limit = len(want)
        page = read_page(dataset, BTC, limit=limit, **query)
        assert page.frame["open_time"].to_list() == want, query
        assert page.next_ms == cursor, query
        # No read held more rows than the page and the one that tells there are more.
        assert collected and max(collected) <= limit + 1, (query, collected)
    # Paged back from the open side: every candle once, in order, across the hole.
    seen: list[int] = []
    end = None
    while True:
        page = read_page(dataset, BTC, end_ms=end, limit=700, newest_first=True)
        seen = page.frame["open_time"].to_list() + seen
        if page.next_ms is None:
            break
        end = page.next_ms
    assert seen == opens


def test_buckets_brought_up_to_date_equal_buckets_made_afresh():
    import random

    rng = random.Random(7)
    opens = sorted(rng.sample(range(0, 20 * 1440), 9000))  # minutes with holes
    frame = pl.DataFrame(
        {
            "open_time": [t * MINUTE for t in opens],
            "close_time": [t * MINUTE + MINUTE - 1 for t in opens],
            "open": [float(t % 97) for t in opens],
            "high": [float(t % 97) + 3 for t in opens],
            "low": [float(t % 97) - 3 for t in opens],
            "close": [float(t % 89) for t in opens],
            "volume": [float(t % 7) for t in opens],
            "quote_volume": [1.0] * len(opens),
            "taker_buy_volume": [0.5] * len(opens),
            "taker_buy_quote_volume": [0.5] * len(opens),
            "trades": [t % 5 for t in opens],
        },
        schema=CANDLES_SCHEMA,
    )
    from kline_tui.store.resample import rebucket

    for target in (Interval.M1, Interval.M5, Interval.H1, Interval.H4, Interval.D1):
        for a, b, keep_from, keep_to in [
            (3000, 4000, 0, 9000),  # a page in the middle
            (500, 9000, 1200, 9000),  # newer rows in, the oldest let go of
            (0, 800, 0, 7000),  # older rows in, the newest let go of
        ]:
            # Rows [a, b) were read in; then the far side was let go of.
            before = pl.concat([frame.slice(0, a), frame.slice(b)])
            after = frame.slice(keep_from, keep_to - keep_from)
            made = rebucket(
                after,
                resample(before, target, own=Interval.M1),
                target,
                int(frame["open_time"][a]),
                int(frame["open_time"][b - 1]) + 1,
                own=Interval.M1,
            )
            assert made.to_dicts() == resample(after, target, own=Interval.M1).to_dicts()


@pytest.mark.simulator(speed=0, start_ms=NOW)
async def test_an_hour_stream_shows_as_calendar_months_on_key_8(sim, tmp_path):
    import calendar

    key = StreamKey.parse("usdm:BTCUSDT:1h")
    app = KlineApp(make_settings(sim, tmp_path / "data", [str(key)], history=60))
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_started()
        await wait_until(
            lambda: app.table.selected is not None and app.recorder.streams[key].closed,
            what="the stream's recent candles",
        )
        await pilot.press("enter")
        await wait_until(lambda: isinstance(app.screen, DetailsScreen), what="the details view")
        screen = app.screen
        assert isinstance(screen, DetailsScreen)
        await pilot.press("8")
        await wait_until(
            lambda: (
                screen.timeframe is Interval.MO1
                and screen.view is not None
                and sum(b.candles for b in screen.view.bars) >= 60
            ),
            what="the months",
        )
        for bar in screen.view.bars:
            year, month, day, hour = time.gmtime(bar.open_time / 1000)[:4]
            assert (day, hour) == (1, 0)  # each opens on the 1st, 00:00 UTC
            assert bar.candles <= calendar.monthrange(year, month)[1] * 24
        assert "cannot show" not in screen.readout.plain
        assert screen.timeframe.value in screen.headline.plain
        await pilot.press("escape", "q")


async def test_month_week_and_3_day_streams_open_in_the_details_view(sim, tmp_path):
    keys = ["usdm:BTCUSDT:1M", "usdm:BTCUSDT:1w", "usdm:BTCUSDT:3d"]
    data = tmp_path / "data"
    app = KlineApp(make_settings(sim, data, keys, history=30, flush_age_s=600.0))
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_started()
        month = StreamKey.parse(keys[0])
        await wait_until(
            lambda: (
                app.table.selected is not None
                and all(app.recorder.streams.get(StreamKey.parse(k)) for k in keys)
                and all(app.recorder.streams[StreamKey.parse(k)].closed for k in keys)
            ),
            what="the streams' recent candles",
        )
        app.table.select(month)
        await pilot.press("enter")
        await wait_until(lambda: isinstance(app.screen, DetailsScreen), what="the details view")
        screen = app.screen
        assert isinstance(screen, DetailsScreen)
        shown: set[StreamKey] = set()
        for _ in range(len(keys)):
            await wait_until(
                lambda: screen.view is not None and len(screen.view.bars) > 5,
                what=f"candles of {screen.key}",
            )
            view = screen.view
            assert view is not None
            # The newest closed candle is shown, at the stream's own interval.
            newest = screen._streams[screen.key].closed[-1]
            assert newest.open_time in {b.open_time for b in view.bars}
            assert all(b.candles == 1 for b in view.bars)  # its own candles, not buckets
            assert "cannot show" not in screen.readout.plain
            await pilot.press("t", "T", "right", "pageup", "home", "end")
            await pilot.pause()
            assert isinstance(app.screen, DetailsScreen)
            shown.add(screen.key)
            await pilot.press("right_square_bracket")
        assert {StreamKey.parse(k) for k in keys} <= shown
        # A timeframe the candles cannot be put in is said on the readout, never raised.
        screen.key = StreamKey.parse(keys[1])
        screen.timeframe = Interval.MO1
        screen._cache = None
        screen.update_view()
        assert "cannot show as 1M" in screen.readout.plain
        await pilot.press("escape", "q")
        await wait_until(lambda: app.return_code is not None, what="the app to quit")


def test_the_api_refuses_padded_or_huge_numbers_and_drops_rows_that_cannot_be(caplog):
    from kline_tui.service.candles import CandlesReply, QueryError, accepted, parse_query

    stream = str(BTC)
    for bad in [
        {"limit": "00015000"},
        {"limit": "01500"},
        {"limit": "9" * 4300},
        {"limit": ""},
        {"start": "0" * 20 + "1735689600000"},
        {"start": "9" * 4300},
        {"end": "2026-11-25T16:30" + " " * 10 + "x" * 30},
        {"end": "2026-11-25T16:30:00.000000000000000000000000000000000000000"},
    ]:
        with pytest.raises(QueryError):
            parse_query({"stream": stream, **bad})
    query = parse_query({"stream": stream, "limit": "1500", "start": "1735689600000"})
    assert (query.limit, query.start_ms) == (1500, 1_735_689_600_000)

    good = (FIRST, FIRST + MINUTE - 1, 1.0, 2.0, 0.5, 1.5, 1.0, 1.0, 0.5, 0.5, 3)
    hostile = [
        (FIRST + MINUTE, 2**64 - 1, *good[2:]),  # a close time past any Int64
        (FIRST + 2 * MINUTE, 4_102_444_800_001, *good[2:]),  # closes after 2100
        (FIRST + 3 * MINUTE, FIRST + 4 * MINUTE - 1, *good[2:10], 2**64 - 1),  # trades
        (FIRST + 4 * MINUTE, FIRST + 5 * MINUTE - 1, *good[2:10], -1),
        (FIRST + 5 * MINUTE, FIRST + 6 * MINUTE - 1, *good[2:10], 10**30),
    ]
    later = (FIRST + 9 * MINUTE, FIRST + 10 * MINUTE - 1, *good[2:])
    reply = CandlesReply(stream, [good, *hostile, later], None)
    rows, cursor = accepted(reply, BTC.kind, None, None)
    assert rows == [good, later] and cursor is None  # the rest of the page is kept
    assert "dropped 5 candle(s) of usdm:BTCUSDT:1m" in caplog.text  # counted
    frame = pl.DataFrame(rows, schema=CANDLES_SCHEMA, orient="row")  # fits the frame
    assert frame["open_time"].to_list() == [FIRST, FIRST + 9 * MINUTE]


@FROZEN
async def test_reads_and_timeframes_are_merged_and_resampled_off_the_loop(
    sim, tmp_path, monkeypatch
):
    import threading

    from kline_tui.ui.screens import details

    monkeypatch.setattr(details, "INLINE_RESAMPLE_ROWS", 100)  # a day is 1,440
    on_loop: list[tuple[str, int]] = []

    def watched(name, fn):
        def call(frame, *args, **kwargs):
            if len(frame) > 100 and threading.current_thread() is threading.main_thread():
                on_loop.append((name, len(frame)))
            return fn(frame, *args, **kwargs)

        return call

    monkeypatch.setattr(details, "resample", watched("resample", details.resample))
    monkeypatch.setattr(details, "rebucket", watched("rebucket", details.rebucket))
    data = tmp_path / "data"
    await record_a_day(sim, data)
    want = recorded(data)
    app = KlineApp(make_settings(sim, data, [str(BTC)], history=0, flush_age_s=600.0))
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await open_details(app, pilot)
        seen = await scroll_to_first(screen, pilot)
        assert set(want["open_time"].to_list()) <= set(seen)
        assert len(screen._history) > 100
        await pilot.press("4")  # 1h: resampled in a thread, then shown
        hours = {b["open_time"]: b for b in loop_aggregate(want.to_dicts(), fixed(3_600_000))}
        await wait_until(
            lambda: (
                screen.view is not None
                and len(screen.view.bars) > 1
                and screen.view.bars[0].open_time == Interval.H1.open_time_at(FIRST)
            ),
            what="the hours",
        )
        for bar in screen.view.bars[:-1]:
            assert (bar.open, bar.close, bar.volume, bar.candles) == (
                hours[bar.open_time]["open"],
                hours[bar.open_time]["close"],
                hours[bar.open_time]["volume"],
                hours[bar.open_time]["candles"],
            )
        await pilot.press("end")
        await wait_until(lambda: screen._loading is None, what="live history")
        await pilot.press("0", "4", "pageup", "pageup")
        await wait_until(lambda: screen._loading is None, what="the page")
        await pilot.pause()
        assert on_loop == []  # no merge or resample of the history on the event loop
        await pilot.press("escape", "q")
        await wait_until(lambda: app.return_code is not None, what="the app to quit")


@FROZEN
async def test_candles_written_older_after_the_first_read_are_found(sim, tmp_path, monkeypatch):
    """The view found nothing older (the recorder had not flushed its history yet); candles
    written since (the first flush, a backfill, an import) are found once the first candle is
    looked at again, not hidden behind a stale "first recorded candle"."""
    from kline_tui.ui.screens import details

    monkeypatch.setattr(details, "FIRST_RECHECK_S", 0.3)
    data = tmp_path / "data"
    app = KlineApp(make_settings(sim, data, [str(BTC)], history=0, flush_age_s=600.0))
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await open_details(app, pilot)
        await wait_until(lambda: screen.at_first, what="nothing older in an empty dataset")
        assert screen.query_one(CandleChart).bars[0].open_time > FIRST
        await record_a_day(sim, data)  # older candles land in the dataset now
        await asyncio.sleep(0.4)
        await pilot.press("home")
        await wait_until(
            lambda: screen.at_first and screen.query_one(CandleChart).bars[0].open_time == FIRST,
            what="the day written after the view opened",
        )
        await pilot.press("escape", "q")
        await wait_until(lambda: app.return_code is not None, what="the app to quit")

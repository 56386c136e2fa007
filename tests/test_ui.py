"""The terminal UI driven through Pilot against the simulator, over real loopback sockets."""

from __future__ import annotations

import asyncio
import logging
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import polars as pl
import pytest
from textual import events
from textual.notifications import Notify

from kline_tui.config import DEFAULT_WATCH, Settings, load_settings
from kline_tui.model import Interval, Market, StreamKey
from kline_tui.recorder.hub import StreamStatus
from kline_tui.recorder.pipeline import Pipeline
from kline_tui.store import layout
from kline_tui.ui import format as fmt
from kline_tui.ui.app import KlineApp
from kline_tui.ui.commands import KeyCommands
from kline_tui.ui.screens.add_streams import AddStreamsScreen, parse_symbols
from kline_tui.ui.screens.details import DetailsScreen
from kline_tui.ui.screens.help import HelpScreen
from kline_tui.ui.widgets.candle_chart import CandleChart
from kline_tui.ui.widgets.sparkline import sparkline
from kline_tui.ui.widgets.watch_table import COLUMNS, Sort

from .datasets import read_dataset, stream_rows
from .support import wait_until

SIZE = (160, 45)
CONFIG = """\
# my kline-tui config: this comment must survive the UI saving the watch list
watch = [{watch}]  # streams

[recorder]
flush_age_s = 1
"""


def rows_of(df: pl.DataFrame, key: StreamKey) -> pl.DataFrame:
    return stream_rows(df, key).with_columns(
        pl.col("open_time").dt.epoch("ms"), pl.col("close_time").dt.epoch("ms")
    )


def settings_from_file(sim, tmp_path: Path, watch: list[str], **kw) -> Settings:
    """Settings read from a real config file (with comments), pointed at the simulator."""
    from dataclasses import replace

    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(watch=", ".join(f'"{w}"' for w in watch)))
    settings = load_settings(config)
    kw.setdefault("data_dir", tmp_path / "data")
    return replace(settings, endpoints=dict(sim.endpoints), **kw)


def control(sim, market: Market, method: str) -> list[list]:
    """The params of every control message of `method` the simulator received on `market`."""
    return [
        params for c in sim.stats[market].connections for (_, m, params) in c.control if m == method
    ]


async def live(app: KlineApp, keys: list[StreamKey]) -> None:
    await app.wait_started()
    streams = app.pipeline.hub.streams
    await wait_until(
        lambda: all(k in streams and streams[k].status is StreamStatus.LIVE for k in keys),
        what=f"{keys} live",
    )


async def test_add_through_the_dialog_subscribes_once_and_shows_the_simulators_price(sim, tmp_path):
    btc = StreamKey.parse("usdm:BTCUSDT:1m")
    eth = StreamKey.parse("usdm:ETHUSDT:1m")
    app = KlineApp(settings_from_file(sim, tmp_path, [str(btc)]))
    async with app.run_test(size=SIZE) as pilot:
        await live(app, [btc])
        opened = sim.stats[Market.USDM].connections_opened
        subscribes = control(sim, Market.USDM, "SUBSCRIBE")

        await pilot.press("a")
        assert isinstance(app.screen, AddStreamsScreen)
        dialog = app.screen
        # The market and interval of the selected row.
        assert (dialog.market, dialog.interval) == (Market.USDM, Interval.M1)
        await pilot.press(*"ethusdt", "enter")
        await wait_until(
            lambda: not isinstance(app.screen, AddStreamsScreen), what="the dialog to close"
        )

        # The row is there at once, selected, before any data came.
        assert eth in app.pipeline.hub.streams
        assert app.table.selected == eth
        await live(app, [eth])
        state = app.pipeline.hub.streams[eth]
        await wait_until(lambda: len(state.closed) >= 60, what="history for the sparkline")

        # Exactly one SUBSCRIBE, for that stream, on the connection that was already open.
        assert control(sim, Market.USDM, "SUBSCRIBE") == [*subscribes, ["ethusdt@kline_1m"]]
        assert sim.stats[Market.USDM].connections_opened == opened
        assert all(c.open for c in sim.stats[Market.USDM].connections)

        # The row shows the simulator's candle: the price, change and high/low of the forming one.
        from kline_tui.sim import expected_candle

        app.repaint()
        k = state.forming
        cells = app.table.row_cells(eth)
        final = expected_candle(Market.USDM, "ETHUSDT", Interval.M1, k.open_time)
        assert k.open == final.open and final.low <= k.low <= k.close <= k.high <= final.high
        assert cells["last"] == fmt.price(k.close)
        assert cells["change"] == fmt.change_pct(k.close, k.open)[0]
        assert (cells["high"], cells["low"]) == (fmt.price(k.high), fmt.price(k.low))
        assert (cells["market"], cells["symbol"], cells["interval"], cells["state"]) == (
            "usdm",
            "ETHUSDT",
            "1m",
            "live",
        )
        closes = [c.close for c in list(state.closed)[-60:]]
        assert cells["spark"] == sparkline(closes, app.table._spark_width).strip()
        for c in list(state.closed)[-60:]:
            assert (
                c.close == expected_candle(Market.USDM, "ETHUSDT", Interval.M1, c.open_time).close
            )

        # The watch list was saved, keeping the user's comments.
        await wait_until(
            lambda: load_settings(app.settings.config_path).watch == (btc, eth), what="config saved"
        )
        text = app.settings.config_path.read_text()
        assert "# my kline-tui config" in text and "flush_age_s = 1" in text
        await pilot.press("q")


async def test_remove_unsubscribes_that_stream_only(sim, tmp_path):
    keys = [StreamKey.parse(s) for s in ("usdm:BTCUSDT:1m", "usdm:ETHUSDT:1m", "usdm:BNBUSDT:5m")]
    app = KlineApp(settings_from_file(sim, tmp_path, [str(k) for k in keys]))
    async with app.run_test(size=SIZE) as pilot:
        await live(app, keys)
        opened = sim.stats[Market.USDM].connections_opened
        await pilot.press("down")
        assert app.table.selected == keys[1]
        await pilot.press("d")
        assert keys[1] not in app.pipeline.hub.streams
        assert app.table.row_text(keys[1]) is None
        conn = [c for c in sim.stats[Market.USDM].connections if c.open]
        await wait_until(lambda: control(sim, Market.USDM, "UNSUBSCRIBE"), what="an UNSUBSCRIBE")
        await asyncio.sleep(0.3)  # room for a wrong second one
        assert control(sim, Market.USDM, "UNSUBSCRIBE") == [["ethusdt@kline_1m"]]
        assert len(conn) == 1 and conn[0].subscriptions == {"btcusdt@kline_1m", "bnbusdt@kline_5m"}
        assert sim.stats[Market.USDM].connections_opened == opened
        await wait_until(
            lambda: load_settings(app.settings.config_path).watch == (keys[0], keys[2]),
            what="config saved",
        )
        await pilot.press("q")


async def test_an_unknown_symbol_is_refused_in_the_dialog(sim, tmp_path):
    btc = StreamKey.parse("spot:BTCUSDT:1m")
    app = KlineApp(settings_from_file(sim, tmp_path, [str(btc)]))
    async with app.run_test(size=SIZE) as pilot:
        await live(app, [btc])
        before = control(sim, Market.SPOT, "SUBSCRIBE")
        await pilot.press("a", *"ethusdt nopeusdt", "enter")
        dialog = app.screen
        error = dialog.query_one("#add-error")
        await wait_until(lambda: "NOPEUSDT" in str(error.render()), what="the refusal")
        message = str(error.render())
        assert "Unknown symbol NOPEUSDT on spot" in message and "Nothing was added" in message
        assert isinstance(app.screen, AddStreamsScreen) and error.display
        assert list(app.pipeline.hub.streams) == [btc]  # not even the good one
        await asyncio.sleep(0.3)
        assert control(sim, Market.SPOT, "SUBSCRIBE") == before

        # A bad spelling is refused before asking the exchange.
        for _ in "ethusdt nopeusdt":
            await pilot.press("backspace")
        # '-' is not even typed: the field only takes symbol characters.
        await pilot.press(*"eth-usdt")
        assert dialog.query_one("#add-symbols").value == "ethusdt"
        await pilot.press("escape")
        assert not isinstance(app.screen, AddStreamsScreen)
        assert list(app.pipeline.hub.streams) == [btc]
        await pilot.press("q")


async def test_quit_writes_every_closed_candle_the_ui_showed(sim, tmp_path):
    keys = [
        StreamKey.parse(s) for s in ("spot:ETHUSDT:1s", "usdm:BTCUSDT:1m", "coinm:BTCUSD_PERP:1m")
    ]
    app = KlineApp(settings_from_file(sim, tmp_path, [str(k) for k in keys], flush_age_s=60.0))
    async with app.run_test(size=SIZE) as pilot:
        await live(app, keys)
        streams = app.pipeline.hub.streams
        ledgers = app.pipeline.ledger.streams
        await wait_until(
            lambda: all(ledgers[k].accepted_ws >= 3 for k in keys), what="closed candles"
        )
        await pilot.press("q")
        await wait_until(lambda: app.return_code is not None, what="the app to exit")
    assert app.return_code == 0
    from kline_tui.sim import expected_candle
    from kline_tui.store.schema import CANDLE_COLUMNS

    df = read_dataset(tmp_path / "data")
    for key in keys:
        state = streams[key]
        rows = rows_of(df, key)
        on_disk = {row[0]: row for row in rows.select(CANDLE_COLUMNS[1:]).iter_rows()}
        assert len(on_disk) == rows.height, f"{key}: duplicates on disk"
        from_ws = app.pipeline.ledger.streams[key].accepted_ws
        shown = list(state.closed)[-from_ws:]  # those that came over the websocket
        assert len(shown) >= 3
        for candle in shown:
            assert on_disk.get(candle.open_time) == candle.as_row(), f"{key}: {candle} not on disk"
        for row in on_disk.values():  # and everything on disk is the simulator's candle
            assert row == expected_candle(key.market, key.symbol, key.interval, row[0]).as_row()
    assert app.pipeline.sink.stats.rows_buffered == 0


FOUR = ["usdm:BTCUSDT:1m", "usdm:ETHUSDT:1m", "spot:ETHUSDT:1m", "coinm:BTCUSD_PERP:1m"]


@asynccontextmanager
async def four_streams(sim, tmp_path):
    """The app on four live streams of three markets; on leaving: no error logged, q quits."""
    keys = [StreamKey.parse(s) for s in FOUR]
    app = KlineApp(settings_from_file(sim, tmp_path, FOUR, flush_age_s=600.0))
    async with app.run_test(size=SIZE) as pilot:
        await live(app, keys)
        yield app, pilot, keys
        errors = [e.message for e in app.events.recent if e.level >= logging.ERROR]
        assert not errors, errors
        await pilot.press("q")
        await wait_until(lambda: app.return_code is not None, what="the app to exit")
    assert app.return_code == 0


def palette(app: KlineApp) -> dict[str, str]:
    """The app's own commands in the palette as it would open now: name -> help."""
    return {c.name: c.help for c in KeyCommands(app.screen).commands()}


async def test_p_pauses_and_resumes_and_f_flushes_from_keys_and_the_palette(sim, tmp_path):
    async with four_streams(sim, tmp_path) as (app, pilot, _keys):
        pipeline = app.pipeline

        # p pauses and resumes; the footer and the palette offer the other one.
        await pilot.press("p")
        assert pipeline.recording is False
        assert app.active_bindings["p"].binding.action == "resume"
        assert "Resume recording" in palette(app) and "Pause recording" not in palette(app)
        await pilot.press("p")
        assert pipeline.recording is True

        # Every key is in the palette by name, with what it does and the key; it runs from there.
        commands = palette(app)
        assert {
            "Add streams",
            "Remove stream",
            "Details",
            "Filter",
            "Sort: next column",
            "Sort: reverse",
            "Pause recording",
            "Flush now",
            "Help",
            "Quit and flush",
        } <= set(commands)
        assert commands["Flush now"] == "Write every buffered candle to Parquet now (f)"
        await pilot.press("ctrl+p", *"pause recording")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_until(lambda: pipeline.recording is False, what="pause from the palette")
        await pilot.press("p")
        assert pipeline.recording is True

        # f writes what is buffered.
        await wait_until(lambda: pipeline.sink.stats.rows_buffered > 0, what="rows to buffer")
        await pilot.press("f")
        await wait_until(lambda: pipeline.sink.stats.files_written > 0, what="a flush")
        assert list((tmp_path / "data").rglob("*.parquet"))

        # A print flushed while the app runs (the runtime's last line on a second signal is one)
        # goes through Textual's App._flush(stderr=...): the app's own flush must not shadow it.
        print("kline-tui: a line flushed to stderr", file=sys.stderr, flush=True)


async def test_slash_filters_as_you_type_enter_keeps_it_and_escape_clears_it(sim, tmp_path):
    async with four_streams(sim, tmp_path) as (app, pilot, keys):
        table, box = app.table, app.query_one("#filter")
        await pilot.press("slash", *"eth")
        assert box.has_focus and box.has_class("-visible")
        assert set(table.order) == {keys[1], keys[2]}
        await pilot.press("enter")
        assert table.has_focus and set(table.order) == {keys[1], keys[2]}
        assert "Clear filter" in palette(app)
        await pilot.press("escape")
        assert set(table.order) == set(keys)
        assert not box.has_class("-visible") and box.value == ""

        # Keys that arrive together (a paste, a fast typist) go where "/" sends them: the box.
        for key in ("slash", "d", "e", "t", "h"):
            app.post_message(events.Key(key, "/" if key == "slash" else key))
        await wait_until(lambda: box.value == "deth", timeout=5, what="the words in the box")
        assert set(app.pipeline.hub.streams) == set(keys)  # d went to the box, not to the table
        await pilot.press("escape")
        assert table.has_focus


async def test_s_cycles_the_sort_and_a_header_click_sorts_by_its_column(sim, tmp_path):
    async with four_streams(sim, tmp_path) as (app, pilot, keys):
        table, streams = app.table, app.pipeline.hub.streams
        await pilot.press("s")
        assert table.sort is Sort.SYMBOL
        assert table.order == sorted(keys, key=lambda k: (k.symbol, k.market.value))
        await pilot.press("s")
        assert table.sort is Sort.CHANGE
        table.update_view()  # prices move all the time: sort and read them at the same moment
        changes = [
            (s.forming.close - s.forming.open) / s.forming.open
            for s in map(streams.get, table.order)
        ]
        assert changes == sorted(changes, reverse=True)
        await pilot.press(*"sssss")  # round to the watch list's order, which prices do not change
        assert table.sort is Sort.LIST and table.order == keys
        await pilot.press("S")
        assert table.reverse and table.order == keys[::-1]

        # A click on a header sorts by that column; a second click reverses it.
        x = 1
        for column in COLUMNS[: [c.id for c in COLUMNS].index("trades")]:
            x += (column.width or table._spark_width) + 1
        await pilot.click("#watch", offset=(x + 2, 0))
        assert table.sort is Sort.TRADES and not table.reverse
        await pilot.click("#watch", offset=(x + 2, 0))
        assert table.sort is Sort.TRADES and table.reverse

        # Each order is in the palette too, found by its name.
        await pilot.press("ctrl+p", *"sort by symbol")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_until(lambda: table.sort is Sort.SYMBOL, what="a sort from the palette")
        assert not table.reverse


async def test_enter_shows_details_and_question_mark_lists_every_key(sim, tmp_path):
    async with four_streams(sim, tmp_path) as (app, pilot, keys):
        table, streams = app.table, app.pipeline.hub.streams

        # A repaint may reach the details view before it is mounted: that must be harmless.
        DetailsScreen(keys[0], streams, lambda: keys).update_view()

        # enter shows the details of the selected stream; ] steps to the next; escape goes back.
        await pilot.press("home")
        selected = table.selected
        await pilot.press("enter")
        assert isinstance(app.screen, DetailsScreen) and app.screen.key == selected
        assert "Remove stream" not in palette(app)  # the table is covered
        await pilot.pause(0.3)
        chart = app.screen.query_one(CandleChart)
        assert chart.bars and chart.render_line(0).cell_length == chart.size.width
        candles = app.screen.query_one("#details-candles")
        app.screen.update_view()  # candles close every second at 60x: compare with the same moment
        view = app.screen.view
        assert view is not None and candles.row_count == len(view.bars) > 0  # the chart's
        await pilot.press("right_square_bracket")
        assert app.screen.key == table.order[1]
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailsScreen)
        assert table.selected == table.order[1]  # back where the details view was

        # ? shows help, one row per key of the footer, in the footer's words; every key is shown.
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        rows = dict(app.screen.key_rows())
        assert rows["p"] == "Pause or resume recording; the live view goes on"
        assert rows["d / del"].startswith("Stop watching the selected stream")
        assert {"a", "f", "⏎", "/", "s", "S", "esc", "?", "q"} <= set(rows)
        await pilot.press("escape")
        shown = {b.binding.action for b in app.active_bindings.values() if b.binding.show}
        assert {
            "add",
            "remove",
            "pause",
            "flush",
            "details",
            "filter",
            "sort",
            "help",
            "quit",
        } <= shown


async def test_first_launch_watches_defaults_and_says_where_things_live(sim, tmp_path):
    config = tmp_path / "config" / "config.toml"
    settings = Settings(
        config_path=config,
        config_exists=False,
        data_dir=tmp_path / "data",
        endpoints=dict(sim.endpoints),
    )
    notes: list[str] = []

    def hook(message) -> None:
        if isinstance(message, Notify):
            notes.append(message.notification.message)

    app = KlineApp(settings)
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        defaults = [StreamKey.parse(s) for s in DEFAULT_WATCH]
        await live(app, defaults)
        assert {k.market for k in defaults} == set(Market)
        await wait_until(lambda: config.exists(), what="the config to be written")
        assert load_settings(config).watch == tuple(defaults)
        # The welcome follows the save (the file exists a moment before the note is posted).
        await wait_until(lambda: any("Config:" in n for n in notes), what="the welcome")
        welcome = [n for n in notes if "Config:" in n]
        assert welcome and str(config) in welcome[0] and str(tmp_path / "data") in welcome[0]
        await pilot.press("q")


async def test_a_dropped_connection_shows_reconnecting_and_recovers(sim, tmp_path):
    from kline_tui.retry import Backoff

    keys = [StreamKey.parse("usdm:BTCUSDT:1m"), StreamKey.parse("spot:BTCUSDT:1m")]
    # A short backoff so the test sees a reconnect in a second or two.
    app = KlineApp(
        settings_from_file(sim, tmp_path, [str(k) for k in keys]),
        pipeline_factory=lambda settings, events: Pipeline(
            settings, events=events, backoff=Backoff(0.5, 2.0)
        ),
    )
    warnings: list[str] = []

    def hook(message) -> None:
        if isinstance(message, Notify) and message.notification.severity == "warning":
            warnings.append(message.notification.message)

    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await live(app, keys)
        panel = app.query_one("#connections")
        sim.faults.refuse_connections(3.0, Market.USDM)
        await sim.faults.drop(Market.USDM)
        await wait_until(
            lambda: app.pipeline.hub.streams[keys[0]].status is StreamStatus.RECONNECTING,
            what="the stream to be reconnecting",
        )
        app.repaint()
        usdm = next(line for line in panel.lines if line.startswith("usdm"))
        assert "reconnecting" in usdm and "attempt" in usdm, usdm
        assert app.table.row_cells(keys[0])["state"] == "reconnecting"
        assert app.table.row_cells(keys[1])["state"] == "live"  # the other market is untouched
        await wait_until(lambda: warnings, what="a warning notification")
        await live(app, keys)  # back once the simulator accepts connections again
        await wait_until(
            lambda: all(c.state.value == "live" for c in app.pipeline.hub.connection_status()),
            what="the connection to be live",
        )
        app.repaint()
        usdm = next(line for line in panel.lines if line.startswith("usdm"))
        assert "connected" in usdm and usdm.split()[-1] != "0", usdm  # one reconnect counted
        await pilot.press("q")


def error_notes(sink: list[str]):
    def hook(message) -> None:
        if isinstance(message, Notify) and message.notification.severity == "error":
            sink.append(message.notification.message)

    return hook


async def test_a_failing_flush_is_notified_and_logged_never_raised(sim, tmp_path):
    btc = StreamKey.parse("usdm:BTCUSDT:1m")
    app = KlineApp(settings_from_file(sim, tmp_path, [str(btc)], flush_age_s=600.0))
    errors: list[str] = []
    async with app.run_test(size=SIZE, message_hook=error_notes(errors)) as pilot:
        await live(app, [btc])
        await wait_until(lambda: app.pipeline.sink.stats.rows_buffered > 0, what="rows to buffer")
        # Where parts are written before they are published.
        staging = layout.staging_dir(tmp_path / "data")
        if staging.exists():
            staging.rmdir()
        staging.write_text("a file where the sink's scratch folder should be")
        await pilot.press("f")
        await wait_until(lambda: errors, what="an error notification")
        assert "could not write" in errors[0] and "stay buffered" in errors[0]
        assert any("could not write" in e.message for e in app.events.recent)
        assert app.is_running and app.pipeline.sink.stats.rows_buffered > 0
        await pilot.press("q")
        await wait_until(lambda: app.return_code is not None, what="the app to exit")
    assert app.return_code == 1  # rows that could not be written are not a clean exit


async def test_an_unusable_data_folder_is_reported_not_raised(sim, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should be")
    app = KlineApp(
        settings_from_file(sim, tmp_path, ["usdm:BTCUSDT:1m"], data_dir=blocker / "data")
    )
    errors: list[str] = []
    async with app.run_test(size=SIZE, message_hook=error_notes(errors)) as pilot:
        await app.wait_started()
        await wait_until(lambda: errors, what="an error notification")
        assert str(blocker / "data") in errors[0] and "starting the recorder failed" in errors[0]
        assert not app.running and app.is_running
        assert app.check_action("add", ()) is None  # shown, but off
        await pilot.press("a")
        assert not isinstance(app.screen, AddStreamsScreen)
        await pilot.press("q")
        await wait_until(lambda: app.return_code is not None, what="the app to exit")


@pytest.mark.parametrize(
    "text, want",
    [
        ("btcusdt", ["BTCUSDT"]),
        (" BTCUSDT, ethusdt;bnbusdt  btcusdt ", ["BTCUSDT", "ETHUSDT", "BNBUSDT"]),
        ("", []),
    ],
)
def test_symbols_are_parsed_from_spaces_and_commas(text, want):
    assert parse_symbols(text) == want


def test_sparkline_squeezes_the_newest_closes_into_its_width():
    assert sparkline([], 4) == "    "
    assert sparkline([1, 2], 4) == "  ▁█"
    assert sparkline([5, 5, 5], 3) == "▁▁▁"
    line = sparkline(list(range(120)), 60)
    assert len(line) == 60 and line[0] == "▁" and line[-1] == "█"


async def test_stale_and_backfilling_states_are_shown_with_counts(sim, tmp_path):
    """Issue 4 in the UI: a stream that goes silent reads "stale"; candles still to fetch read
    "backfill N" with N the count, until REST has delivered them."""
    keys = [StreamKey.parse("usdm:BTCUSDT:1m"), StreamKey.parse("usdm:ETHUSDT:1m")]
    sim.faults.rest_delay_s = 3.0  # hold the history fetch back so the count stays on screen
    app = KlineApp(settings_from_file(sim, tmp_path, [str(k) for k in keys], history=300))
    async with app.run_test(size=SIZE) as pilot:
        await app.wait_started()
        table = app.table

        def shown(key: StreamKey, words: str) -> bool:
            text = table.row_text(key) or ""
            return words in text

        await wait_until(lambda: shown(keys[0], "backfill 300"), what="backfill 300 on screen")
        await wait_until(lambda: shown(keys[0], "live"), timeout=30, what="live after the backfill")
        sim.faults.rest_delay_s = 0.0
        sim.faults.stall(30, market=Market.USDM, streams=["ethusdt@kline_1m"])
        await wait_until(lambda: shown(keys[1], "stale"), timeout=15, what="stale on screen")
        assert shown(keys[0], "live") or shown(keys[0], "backfill")
        await pilot.press("q")

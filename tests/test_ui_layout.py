"""Layouts (groups, columns, compact, theme) kept in the config; an unreachable exchange at the
first launch; the numbers the screen shows (lag on the exchange's clock, live while paused)."""

from __future__ import annotations

import logging
import socket
from dataclasses import replace
from pathlib import Path

import pytest
from rich.cells import cell_len
from textual.app import App, ComposeResult

from kline_tui.binance.connection import ConnectionState, ConnectionStatus
from kline_tui.binance.markets import Endpoints
from kline_tui.config import UI_COLUMNS, Settings, UiConfig, load_settings
from kline_tui.model import Kind, Market, StreamKey
from kline_tui.recorder.hub import StreamState, StreamStatus
from kline_tui.retry import Backoff
from kline_tui.service.client import RemoteRecorder
from kline_tui.service.feed import connection_row
from kline_tui.ui import format as fmt
from kline_tui.ui.app import KlineApp
from kline_tui.ui.recorder import AttachedRecorder
from kline_tui.ui.screens.add_streams import AddStreamsScreen, kinds_of, pairs_of
from kline_tui.ui.screens.columns import ColumnsScreen
from kline_tui.ui.widgets.connections import ConnectionsPanel, connection_rows, format_lag
from kline_tui.ui.widgets.recording import RecordingPanel, RecordingView
from kline_tui.ui.widgets.status_bar import Overview, StatusBar
from kline_tui.ui.widgets.watch_table import (
    COLUMN_IDS,
    LONG_LIST,
    Group,
    GroupLine,
    WatchTable,
    fit_columns,
    state_label,
    symbol_cell,
)

from .service_support import TOKEN, live, serve
from .support import fast_pipeline, wait_until

WATCH = ["spot:BTCUSDT:1m", "usdm:BTCUSDT:1m", "usdm:ETHUSDT:1m", "coinm:BTCUSD_PERP:1m"]
KEYS = [StreamKey.parse(s) for s in WATCH]
SMALL = (80, 24)


# -- the table's columns and words, without an app ---------------------------------------------


def test_the_configs_column_ids_are_the_tables():
    assert UI_COLUMNS == COLUMN_IDS


@pytest.mark.parametrize("compact", [False, True])
def test_symbol_and_state_always_fit_and_columns_keep_the_chosen_order(compact):
    chosen = ("state", "last", "market", "symbol", "volume", "spark")
    for width in range(60, 240):
        columns, spark = fit_columns(width, chosen, compact=compact)
        ids = [c.id for c in columns]
        assert "symbol" in ids and "state" in ids
        assert ids == [c for c in chosen if c in ids]  # the user's order, whatever is left out
        drawn = sum(c.width or spark for c in columns) + len(columns) + 1
        assert drawn <= width, (width, ids)
    full, _ = fit_columns(200, UI_COLUMNS)
    assert [c.id for c in full] == list(UI_COLUMNS)
    small, _ = fit_columns(200, UI_COLUMNS, compact=True)
    assert {"high", "low", "trades"}.isdisjoint(c.id for c in small)


def test_a_state_word_is_never_longer_than_its_column():
    width = next(c.width for c in fit_columns(80)[0] if c.id == "state")
    state = StreamState(KEYS[0])
    for status in StreamStatus:
        state.status = status
        for backfill in (0, 7, 999, 1_000, 9_999, 12_345, 999_499, 999_500, 12_345_678, 10**12):
            state.backfill = backfill
            for paused in (False, True):
                assert len(state_label(state, paused=paused)) <= width
    state.status, state.backfill = StreamStatus.BACKFILLING, 1_234
    assert state_label(state) == "backfill 1.2K"
    assert state_label(state, paused=True) == "live"  # a paused recorder fetches nothing
    assert state_label(state, "offline") == "offline"


def test_a_negative_series_rising_shows_and_sorts_as_a_rise():
    """A premium index is a signed fraction: from -0.0003 to -0.0002 it rose, by a third of
    its magnitude (as the change_pct alert counts it), not fell by 33%."""
    from kline_tui.model import Candle
    from kline_tui.ui.widgets.watch_table import Sort

    assert fmt.change_pct(-0.0002, -0.0003) == ("+33.33%", 1)
    assert fmt.change_pct(-0.0004, -0.0003) == ("-33.33%", -1)
    assert fmt.change_pct(101.0, 100.0) == ("+1.00%", 1)

    def state(spec: str, open_: float, close: float) -> StreamState:
        st = StreamState(StreamKey.parse(spec))
        hi, lo = max(open_, close), min(open_, close)
        st.forming = Candle(0, 59_999, open_, hi, lo, close, 0.0, 0.0, 0.0, 0.0, 0)  # type: ignore[assignment]
        return st

    rising = state("usdm:BTCUSDT:1m:premium", -0.0003, -0.0002)
    falling = state("usdm:ETHUSDT:1m:premium", -0.0003, -0.0004)
    flat = state("usdm:SOLUSDT:1m", 100.0, 100.0)
    order = sorted([falling, flat, rising], key=Sort.CHANGE.key_func({}))
    assert [s.key.symbol for s in order] == ["BTCUSDT", "SOLUSDT", "ETHUSDT"]  # largest first


def test_kinds_show_as_a_tag_and_the_dialog_offers_what_each_market_has():
    assert fmt.kind_tag("mark") == "mark" and fmt.kind_tag("perpetual") == "perp"
    assert fmt.kind_tag("trade") == ""
    assert kinds_of(Market.SPOT) == [Kind.TRADE]
    assert kinds_of(Market.USDM) == list(Kind)
    assert pairs_of(["BTCUSD_PERP", "BTCUSD_250328", "ETHUSD_PERP"]) == ["BTCUSD", "ETHUSD"]
    assert pairs_of(["BTCUSDT", "BTCUSDT_250328"]) == ["BTCUSDT"]


# -- layouts saved in the config and restored ----------------------------------------------------


def config_app(sim, tmp_path: Path, **kw) -> KlineApp:
    """The app on `WATCH` from a config file in `tmp_path` (written unless it exists)."""
    config = tmp_path / "config.toml"
    if not config.exists():
        specs = ", ".join(f'"{w}"' for w in WATCH)
        config.write_text(f"# my layout\nwatch = [{specs}]\n[recorder]\nflush_age_s = 600\n")
    settings = replace(
        load_settings(config), endpoints=dict(sim.endpoints), data_dir=tmp_path / "data"
    )
    return KlineApp(settings, **kw)


async def saved_ui(app: KlineApp, want: UiConfig) -> UiConfig:
    path = app.settings.config_path
    await wait_until(lambda: load_settings(path).ui == want, what=f"{want} in the config")
    return load_settings(path).ui


async def test_grouping_columns_compact_and_theme_are_saved_and_restored(sim, tmp_path):
    app = config_app(sim, tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await app.wait_started()
        table = app.table
        await wait_until(lambda: len(table.order) == len(KEYS), what="the rows")

        # g: by market, with a heading per market, in the markets' order; again: by symbol.
        await pilot.press("g")
        assert table.group is Group.MARKET
        headings = [line for line in table.lines if isinstance(line, GroupLine)]
        assert [h.name for h in headings] == ["spot", "usdm", "coinm"]
        assert [h.streams for h in headings] == [1, 2, 1]
        assert table.lines[1:4] == [KEYS[0], GroupLine("usdm", 2, headings[1].live), KEYS[1]]
        await pilot.press("g")
        assert table.group is Group.SYMBOL
        names = [line.name for line in table.lines if isinstance(line, GroupLine)]
        assert names == ["BTCUSD", "BTCUSDT", "ETHUSDT"]
        # The cursor walks the streams, never a heading.
        await pilot.press("home", "down")
        assert table.selected == table.order[1]

        # c: untick the volume, move the state to the front, apply.
        await pilot.press("c")
        assert isinstance(app.screen, ColumnsScreen)
        await pilot.pause()
        dialog = app.screen
        await pilot.press(*["down"] * UI_COLUMNS.index("volume"), "space")
        await pilot.press("end", *["left_square_bracket"] * (len(UI_COLUMNS) - 1))
        await pilot.press("enter")
        assert not isinstance(app.screen, ColumnsScreen)
        want_columns = ("state", *(c for c in UI_COLUMNS if c not in ("volume", "state")))
        assert dialog.chosen == want_columns
        assert table.chosen == want_columns

        # z: compact; the panels under the table leave the screen.
        await pilot.press("z")
        await pilot.pause()
        assert table.compact and not app.query_one("#bottom").display

        # The palette's theme switch.
        app.theme = "nord"
        want = UiConfig(columns=want_columns, group="symbol", compact=True, theme="nord")
        await saved_ui(app, want)
        await pilot.press("q")
        await wait_until(lambda: app.return_code is not None, what="the app to exit")

    text = (tmp_path / "config.toml").read_text()
    assert text.startswith("# my layout\n") and "flush_age_s = 600" in text

    # The next start comes back as it was left.
    again = config_app(sim, tmp_path)
    async with again.run_test(size=SMALL) as pilot:
        await pilot.pause()
        assert again.table.group is Group.SYMBOL
        assert again.table.chosen == want_columns
        assert again.table.compact and not again.query_one("#bottom").display
        assert again.theme == "nord"
        assert again.table.columns[0].id == "state"
        await pilot.press("q")
        await wait_until(lambda: again.return_code is not None, what="the app to exit")


async def test_an_unknown_theme_in_the_config_falls_back_with_a_line(sim, tmp_path):
    app = config_app(sim, tmp_path)
    app.settings = replace(app.settings, ui=UiConfig(theme="no-such-theme"))
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        assert app.theme == "textual-dark"
        assert any("no-such-theme" in e.message for e in app.events.recent)
        await pilot.press("q")
        await wait_until(lambda: app.return_code is not None, what="the app to exit")


# -- no exchange ---------------------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_exchange_shows_the_rows_offline_and_a_banner(tmp_path):
    port = closed_port()
    endpoints = {m: Endpoints(f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}") for m in Market}
    settings = Settings(
        config_path=tmp_path / "config.toml",
        config_exists=True,
        data_dir=tmp_path / "data",
        watch=tuple(KEYS),
        endpoints=endpoints,
    )
    app = KlineApp(settings)
    async with app.run_test(size=SMALL) as pilot:
        table, banner = app.table, app.query_one("#banner")
        # At once: every row of the watch list, checking or already offline.
        await wait_until(lambda: len(table.order) == len(KEYS), timeout=5, what="the rows")
        states = {table.row_cells(k)["state"] for k in KEYS}
        assert states <= {"checking", "offline"}, states
        assert "recording" not in _status(app).replace("not recording", "")

        # Offline after the first refused connection, long before the retries are spent.
        await wait_until(lambda: banner.display, timeout=10, what="the banner")
        assert {table.row_cells(k)["state"] for k in KEYS} == {"offline"}
        text = str(banner.render())
        assert "cannot be reached" in text and "kline-tui --demo" in text
        assert f"127.0.0.1:{port}" in text
        await wait_until(
            lambda: "next try in" in str(banner.render()), timeout=60, what="a countdown"
        )
        status = _status(app)
        assert "not recording" in status and "● recording" not in status
        assert app.runtime is not None and not app.runtime.started
        await pilot.press("q")
        await wait_until(lambda: app.return_code is not None, timeout=30, what="the app to exit")


def _status(app: KlineApp) -> str:
    return str(app.query_one("#status", StatusBar).render())


# -- truthful numbers ----------------------------------------------------------------------------


@pytest.mark.simulator(speed=60.0, offset_ms=-1_358_000)  # the demo's 60x, 22m38s behind
async def test_lag_is_measured_on_the_exchange_clock_not_the_local_one(sim, tmp_path):
    pipeline = fast_pipeline(sim, tmp_path)
    await pipeline.start()
    try:
        statuses = pipeline.hub.connection_status
        await wait_until(
            lambda: len(statuses()) == 3 and all(s.lag_ms is not None for s in statuses()),
            what="lag on every connection",
        )
        for status in statuses():
            # A 60x clock turns a real delay of d into 60 d: a loaded machine's 200 ms is 12 s.
            # Against the local clock it would read about -22m38s.
            assert status.lag_ms is not None and abs(status.lag_ms) < 30_000, status
    finally:
        await pipeline.stop()


def test_a_lag_on_a_fast_clock_is_shown_in_real_time():
    status = ConnectionStatus(conn_id=1, market=Market.USDM, lag_ms=-3_000.0)
    assert connection_rows([status], 0.0, clock_rate=60.0)[0][6] == "-50 ms"
    assert connection_rows([status], 0.0)[0][6] == "-3.0 s"


async def test_paused_says_live_and_not_recording(sim, tmp_path):
    app = config_app(sim, tmp_path)
    async with app.run_test(size=(200, 60)) as pilot:
        await app.wait_started()
        streams = app.pipeline.hub.streams
        await wait_until(
            lambda: all(streams[k].status is StreamStatus.LIVE for k in KEYS), what="live"
        )
        await pilot.press("p")
        assert app.pipeline.recording is False
        # While paused, candles that close are owed to the dataset (fetched on resume): the
        # streams still receive every live event, and say so.
        await wait_until(lambda: sum(s.backfill for s in streams.values()) > 0, what="owed rows")
        app.repaint()
        overview = app.query_one("#status", StatusBar).overview
        assert overview.live == len(KEYS) and not overview.recording
        assert f"{len(KEYS)} streams ({len(KEYS)} live)" in _status(app)
        assert "paused: live, not recording" in _status(app)
        assert {app.table.row_cells(k)["state"] for k in KEYS} == {"live"}
        await pilot.press("p")
        errors = [e.message for e in app.events.recent if e.level >= logging.ERROR]
        assert not errors, errors
        await pilot.press("q")
        await wait_until(lambda: app.return_code is not None, what="the app to exit")


async def test_the_add_dialog_offers_kinds_and_pairs_and_asks_for_a_mark_stream(sim, tmp_path):
    app = config_app(sim, tmp_path)
    asked: list[list[StreamKey]] = []

    async def add(keys: list[StreamKey]) -> list[StreamKey]:
        asked.append(keys)  # what the dialog asks the recorder for (the recorder's side is the
        return keys  # kinds' own tests')

    async with app.run_test(size=SMALL) as pilot:
        await app.wait_started()
        dialog = AddStreamsScreen(add, app._symbols_of, market=Market.SPOT)
        await app.push_screen(dialog)
        await pilot.pause()
        assert dialog.query_one("#add-kind").disabled  # spot: trade klines only
        dialog.query_one("#add-market").value = Market.COINM
        await pilot.pause()
        assert not dialog.query_one("#add-kind").disabled
        await wait_until(lambda: "BTCUSD_PERP" in dialog.suggester.symbols, what="symbols")
        dialog.query_one("#add-kind").value = Kind.INDEX
        await wait_until(lambda: "BTCUSD" in dialog.suggester.symbols, what="pairs")
        assert not any("_" in s for s in dialog.suggester.symbols)
        dialog.query_one("#add-kind").value = Kind.MARK
        await wait_until(lambda: "BTCUSD_PERP" in dialog.suggester.symbols, what="symbols again")
        dialog.query_one("#add-symbols").focus()
        await pilot.press(*"ethusd_perp", "enter")
        await wait_until(lambda: asked, what="the dialog to ask")
        assert asked == [[StreamKey.parse("coinm:ETHUSD_PERP:1m:mark")]]
        await pilot.press("q")
        await wait_until(lambda: app.return_code is not None, what="the app to exit")


def test_the_table_tags_a_kind_after_the_symbol_and_shows_no_volume_without_one():
    mark = StreamKey.parse("coinm:BTCUSD_PERP:1m:mark")
    perp = StreamKey.parse("usdm:BTCUSDT:1m:perpetual")
    assert symbol_cell(mark) == "BTCUSD_PERP·mark"
    assert symbol_cell(perp) == "BTCUSDT·perp"
    assert symbol_cell(KEYS[0]) == "BTCUSDT"


# -- the reviewer's findings: lag in real time on both faces, the panels agree with the header --


def _shown_lags(app: KlineApp) -> dict[tuple[str, str], str]:
    """The connections panel's lag cell of each connection, by (market, "#id")."""
    rows = app.query_one("#connections", ConnectionsPanel).rows
    return {(row[0], row[1]): row[6] for row in rows}


def _real_lag_s(cell: str) -> float:
    """A lag cell ("-50 ms", "3.9 s") in seconds; longer spans count as an hour."""
    number, _, unit = cell.partition(" ")
    if unit == "ms":
        return float(number) / 1000
    if unit == "s":
        return float(number)
    return 3600.0


def test_the_recorder_sends_lag_in_real_time():
    status = ConnectionStatus(conn_id=1, market=Market.USDM, lag_ms=-3_000.0)
    assert connection_row(status, 0.0, 60.0).lag_ms == -50.0
    assert connection_row(status, 0.0).lag_ms == -3_000.0
    assert connection_row(replace(status, lag_ms=None), 0.0, 60.0).lag_ms is None
    # Per market: a mapping of rates, as the app passes the markets' clocks; none known: 1.
    rates = {Market.USDM: 60.0}
    assert connection_rows([status], 0.0, clock_rate=rates)[0][6] == "-50 ms"
    assert connection_rows([status], 0.0, clock_rate={})[0][6] == "-3.0 s"


async def test_a_local_ui_on_a_fast_clock_shows_lag_in_real_time(sim, tmp_path):
    # The default simulator: 60x and an hour ahead; no demo speed given, so the pipeline
    # measures the rate from two server times, and the panel must divide by what it measured.
    app = config_app(sim, tmp_path)
    async with app.run_test(size=(200, 60)) as pilot:
        await app.wait_started()
        pipeline = app.pipeline
        assert pipeline is not None
        statuses = pipeline.hub.connection_status
        await wait_until(
            lambda: len(statuses()) == 3 and all(s.lag_ms is not None for s in statuses()),
            what="lag on every connection",
        )
        app.repaint()
        shown = _shown_lags(app)
        for status in statuses():
            rate = pipeline.rest.clock(status.market).rate
            assert 30 < rate < 120, rate  # measured: about the simulator's 60x
            assert status.lag_ms is not None
            cell = shown[(status.market.value, f"#{status.conn_id}")]
            assert cell == format_lag(status.lag_ms / rate)
            assert abs(_real_lag_s(cell)) < 5, (cell, status.lag_ms)
        await pilot.press("q")
        await wait_until(lambda: app.return_code is not None, what="the app to exit")


def _recording_text(app: KlineApp) -> str:
    return str(app.query_one("#recording", RecordingPanel).render())


async def test_an_attached_ui_shows_real_lag_the_truth_when_disconnected_and_saves_its_layout(
    sim, tmp_path
):
    ui_config = tmp_path / "ui.toml"
    async with serve(sim, tmp_path / "data") as served:
        await live(served)
        client = RemoteRecorder(served.url, TOKEN, backoff=Backoff(base=0.1, cap=0.5))
        settings = Settings(ui_config, False)
        app = KlineApp(settings, recorder=AttachedRecorder(client, served.url, settings))
        async with app.run_test(size=(200, 60)) as pilot:
            await app.wait_started()
            mirrored = app.recorder.connection_status
            await wait_until(
                lambda: mirrored() and all(s.lag_ms is not None for s in mirrored()),
                what="the recorder's lag",
            )
            # The recorder's 60x clock: it sends lag in real ms (what it measured, over the
            # rate its clock measured), and the UI shows it as it comes.
            pipeline = served.runtime.pipeline
            assert pipeline is not None
            sent = {c.conn_id: c.lag_ms for c in served.service.feed.snapshot().connections}
            for status in pipeline.hub.connection_status():
                assert status.lag_ms is not None
                rate = pipeline.rest.clock(status.market).rate
                assert 30 < rate < 120 and sent[status.conn_id] == status.lag_ms / rate
            app.repaint()
            for cell in _shown_lags(app).values():
                assert abs(_real_lag_s(cell)) < 5, cell
            assert "● recording" in _recording_text(app)

            # The layout is the UI's own: saved to its own config, attached or not.
            await pilot.press("g")
            await wait_until(
                lambda: ui_config.exists() and load_settings(ui_config).ui.group == "market",
                what="the layout in the UI's config",
            )

            # Every connection of the recorder down: the panel agrees with the header.
            sim.faults.refuse_connections(60)
            await sim.faults.drop()
            await wait_until(
                lambda: mirrored() and all(s.state is not ConnectionState.LIVE for s in mirrored()),
                what="the recorder's connections down",
            )
            app.repaint()
            assert "not recording: nothing connected" in _status(app)
            text = _recording_text(app)
            assert "not recording" in text and "● recording" not in text, text
            sim.faults.reset()
            await pilot.press("q")
            await wait_until(lambda: app.return_code is not None, what="the UI closed")


async def test_paused_claims_live_only_while_something_is_connected():
    async with _TableApp().run_test(size=SMALL) as pilot:
        bar, panel = StatusBar(), RecordingPanel()
        await pilot.app.mount(bar, panel)
        bar.overview = Overview(recording=False, connected=2, connections=2)
        assert "paused: live, not recording" in str(bar.render())
        bar.overview = Overview(recording=False, connected=0, connections=2)
        line = str(bar.render())
        assert "paused: nothing connected" in line and "live," not in line
        panel.view = replace(panel.view, recording=False, connected=True)
        assert "live view goes on" in str(panel.render())
        panel.view = replace(panel.view, recording=False, connected=False)
        text = str(panel.render())
        assert "paused" in text and "live view goes on" not in text


class _TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield WatchTable(id="watch")


async def test_a_long_list_drops_a_stream_removed_as_another_came_at_once():
    app = _TableApp()
    async with app.run_test(size=SMALL):
        table = app.query_one(WatchTable)
        keys = [StreamKey.parse(f"usdm:S{i}USDT:1m") for i in range(LONG_LIST + 2)]
        table.streams = {k: StreamState(k) for k in keys[:-1]}
        table.update_view()
        assert table.order == keys[:-1]
        # One removed, one added between two repaints: the count is as it was.
        del table.streams[keys[0]]
        table.streams[keys[-1]] = StreamState(keys[-1])
        table.update_view()
        assert keys[0] not in table.order and keys[0] not in table.lines
        assert table.order[-1] == keys[-1]


@pytest.mark.parametrize(
    "view",
    [
        RecordingView(
            data_dir="~/data/kline-tui/demo-data",
            rows_buffered=12_345,
            rows_written=1_234_567,
            files_written=321,
            flushed_ago="42 s",
            flush_every="every 1m00s or 50,000 rows",
        ),
        RecordingView(data_dir="~/data/kline-tui/demo-data", recording=False, errors=3),
        RecordingView(data_dir="~/data/kline-tui/demo-data", connected=False),
        RecordingView(data_dir="~/data/kline-tui/demo-data", unreachable="refused"),
    ],
)
def test_the_recording_panel_says_it_in_fewer_words_when_narrow(view):
    """At 80x24 the panel has 36 columns: its short lines fit whole, the long ones would not."""
    from kline_tui.ui.widgets.recording import _describe

    def widest(text) -> int:
        return max(cell_len(line) for line in text.plain.splitlines())

    assert widest(_describe(view, narrow=True)) <= 36
    if view.unreachable is None and view.recording and view.connected:
        assert widest(_describe(view)) > 36  # what a narrow panel would have cut

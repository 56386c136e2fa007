"""Snapshots of the main screen, the add dialog and the details view (pytest-textual-snapshot);
the main screen (plain, grouped by market, compact), the add dialog, help, the alert dialog, the
alerts list and the columns screen also at 80x24 and 200x60, where no state word may be cut and
every field and button must be inside the screen.

The app runs in demo mode against a simulator whose exchange clock is frozen at a fixed instant,
so prices, histories and sparklines are the same on every run. What still depends on the machine
(connection ages, message rates, lag, ports, event times) is pinned just before the screenshot:
the app's repaint is held, those values are set, and one repaint draws them.

Update after a deliberate change with `pytest tests/test_ui_snapshots.py --snapshot-update`, and
look at the SVGs before committing them.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import re
import shutil
import time
from pathlib import Path

import pytest
from textual.widgets import Input

from kline_tui.binance.connection import Connection
from kline_tui.config import AlertConfig, Settings, UiConfig
from kline_tui.model import StreamKey
from kline_tui.recorder.events import Event
from kline_tui.recorder.hub import StreamStatus
from kline_tui.ui.app import KlineApp
from kline_tui.ui.screens.add_streams import AddStreamsScreen
from kline_tui.ui.screens.alert_dialog import AlertDialog
from kline_tui.ui.screens.alerts import AlertsScreen
from kline_tui.ui.screens.columns import ColumnsScreen
from kline_tui.ui.screens.details import DetailsScreen
from kline_tui.ui.widgets.candle_chart import CandleChart
from kline_tui.ui.widgets.watch_table import COLUMNS

SIZE = (160, 45)
SMALL, LARGE = (80, 24), (200, 60)
START_MS = 1_795_010_597_000  # 2026-11-18 14:03:17 UTC: the frozen exchange clock
CLOCK = 10_000.0  # the app's monotonic clock, frozen
WALL = START_MS / 1000  # the app's wall clock, frozen
DATA_DIR = Path("/tmp/kline-tui-snapshot/data")  # shown on screen, so not a random tmp path
WATCH = (
    "spot:BTCUSDT:1m",
    "spot:ETHUSDT:1m",
    "spot:SOLUSDT:1s",
    "usdm:BTCUSDT:1m",
    "usdm:ETHUSDT:1m",
    "usdm:BNBUSDT:5m",
    "coinm:BTCUSD_PERP:1m",
    "coinm:ETHUSD_PERP:1m",
)


def frozen_simulator(speed: float):
    """A simulator whose exchange clock stands still at START_MS."""
    from kline_tui.sim import Simulator

    return Simulator(speed=0, start_ms=START_MS)


@pytest.fixture
def app(monkeypatch) -> KlineApp:
    yield from _app(monkeypatch, UiConfig())


def _steady_cursor(self: Input) -> None:
    self._cursor_visible = True


def _app(monkeypatch, ui: UiConfig):
    # A text cursor blinks twice a second: the screen pinned at a random moment of the blink
    # would differ from run to run (CI caught it), so the cursor stays shown.
    monkeypatch.setattr(Input, "_toggle_cursor", _steady_cursor)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    # Connection ids count per process: start them at 1 whatever ran before.
    monkeypatch.setattr(Connection, "_ids", itertools.count(1))
    shutil.rmtree(DATA_DIR.parent, ignore_errors=True)
    settings = Settings(
        config_path=DATA_DIR.parent / "config.toml",
        config_exists=True,
        data_dir=DATA_DIR,
        watch=tuple(StreamKey.parse(s) for s in WATCH),
        flush_age_s=3600.0,
        # No history to record: a backfill that ends before the screen is pinned (or not, on a
        # loaded machine) would change the "recorded" counts from one run to the next.
        history=0,
        ui=ui,
    )
    yield KlineApp(
        settings,
        demo_speed=1.0,
        simulator_factory=frozen_simulator,
        clock=lambda: CLOCK,
        wall_clock=lambda: WALL,
    )
    monkeypatch.undo()
    time.tzset()
    shutil.rmtree(DATA_DIR.parent, ignore_errors=True)


async def settle(app: KlineApp, timeout: float = 60.0) -> None:
    """Wait until every stream is live with its history, then pin what depends on the machine."""
    await app.wait_started()
    streams = app.pipeline.hub.streams
    deadline = time.monotonic() + timeout
    while not (
        len(streams) == len(WATCH)
        and all(s.status is StreamStatus.LIVE and len(s.closed) >= 60 for s in streams.values())
        and all(c.state.value == "live" for c in app.pipeline.hub.connection_status())
    ):
        assert time.monotonic() < deadline, "streams did not settle"
        await asyncio.sleep(0.05)
    freeze(app)


def freeze(app: KlineApp) -> None:
    app.hold_display = True
    for status in app.pipeline.hub.connection_status():
        status.connected_at = CLOCK - 83.0
        status.lag_ms = 12.0
        status.recent_frames = collections.deque(
            [(CLOCK - 4.0, status.frames - 16 * status.streams)]
        )
    # The log as it happened, with ports and times pinned, in a stable order.
    events = sorted(
        (
            Event(WALL, e.level, re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", e.message))
            for e in app.events.recent
        ),
        key=lambda e: (e.message.split(":")[0], e.message),
    )
    app.events.recent.clear()
    app.events.recent.extend(events)
    app.repaint(reload_events=True)


def test_main_screen(app, snap_compare):
    async def run_before(pilot) -> None:
        await settle(app)
        # The table repaints itself; the panels stay pinned.
        await pilot.press("down", "down", "down")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_add_dialog(app, snap_compare):
    async def run_before(pilot) -> None:
        await settle(app)
        await pilot.press("a")
        dialog = app.screen
        assert isinstance(dialog, AddStreamsScreen)
        while not dialog.suggester.symbols:
            await asyncio.sleep(0.02)
        await pilot.press(*"btcusdt, eth")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_details_view(app, snap_compare):
    async def run_before(pilot) -> None:
        await settle(app)
        await pilot.press("down", "down", "down", "enter")
        assert isinstance(app.screen, DetailsScreen)
        assert app.screen.key == StreamKey.parse("usdm:BTCUSDT:1m")
        app.screen.update_view()
        await pilot.pause(0.1)
        assert app.screen.query_one(CandleChart).bars

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


async def _details_with_a_recorded_day(app: KlineApp, pilot, keys: tuple[str, ...]) -> None:
    """usdm:BTCUSDT:1m's last day written into the dataset (a backfill from the simulator),
    then its details view open once every read of the dataset is in."""
    from kline_tui.store.history import backfill

    await settle(app)
    key = StreamKey.parse("usdm:BTCUSDT:1m")
    pipeline = app.pipeline
    last = key.interval.open_time_at(START_MS) - 60_000
    await backfill(pipeline.dataset, key, pipeline.rest, last - 1439 * 60_000, last)
    await pilot.press("down", "down", "down", "enter")
    screen = app.screen
    assert isinstance(screen, DetailsScreen) and screen.key == key
    for name in keys:
        await pilot.press(name)
        deadline = time.monotonic() + 20
        while screen._loading is not None:  # the dataset read in a worker
            assert time.monotonic() < deadline, "the dataset was not read"
            await asyncio.sleep(0.02)
        await pilot.pause()
    screen.update_view()
    await pilot.wait_for_scheduled_animations()  # the table scrolled to the crosshair's row
    await pilot.pause(0.1)


def test_details_view_as_1h_with_crosshair_at_80x24(app, snap_compare):
    async def run_before(pilot) -> None:
        await _details_with_a_recorded_day(app, pilot, ("4", "left", "left", "left"))
        assert isinstance(app.screen, DetailsScreen) and app.screen.timeframe.value == "1h"

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_details_view_back_at_the_first_recorded_candle_at_200x60(app, snap_compare):
    async def run_before(pilot) -> None:
        await _details_with_a_recorded_day(app, pilot, ("home", "2", "right"))
        assert isinstance(app.screen, DetailsScreen) and app.screen.at_first

    assert snap_compare(app, terminal_size=(200, 60), run_before=run_before)


LAYOUTS = {
    "plain": UiConfig(),
    "grouped": UiConfig(group="market"),
    "compact": UiConfig(compact=True),
}


@pytest.fixture(params=list(LAYOUTS))
def laid_out(request, monkeypatch) -> KlineApp:
    yield from _app(monkeypatch, LAYOUTS[request.param])


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x60"])
def test_main_screen_layouts(laid_out, size, snap_compare):
    async def run_before(pilot) -> None:
        await settle(laid_out)
        await pilot.press("down", "down", "down")
        await pilot.pause()
        table = laid_out.table
        states = {"live", "subscribing", "waiting"}
        for key in table.order:
            cells = table.row_cells(key)
            assert cells is not None and cells["state"] in states, cells  # whole, never cut

    assert snap_compare(laid_out, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x60"])
def test_add_dialog_sizes(app, size, snap_compare):
    async def run_before(pilot) -> None:
        await settle(app)
        await pilot.press("a")
        dialog = app.screen
        assert isinstance(dialog, AddStreamsScreen)
        while not dialog.suggester.symbols:
            await asyncio.sleep(0.02)
        await pilot.press(*"btcusdt")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x60"])
def test_help_sizes(app, size, snap_compare):
    async def run_before(pilot) -> None:
        await settle(app)
        await pilot.press("question_mark")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def assert_on_screen(app: KlineApp, *selectors: str) -> None:
    """Each widget is shown, whole, inside the terminal (not just somewhere in the picture)."""
    screen = app.screen
    for selector in selectors:
        widget = screen.query_one(selector)
        region = widget.region
        assert widget.display and region.width > 0 and region.height > 0, (selector, region)
        assert screen.region.contains_region(region), (selector, region, screen.region)


ALERT_FIELDS = (
    "#alert-rule",
    "#alert-value",
    "#alert-window",
    "#alert-cooldown",
    "#alert-hint",
    "#alert-cancel-button",
    "#alert-ok",
)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x60"])
def test_alert_dialog_sizes(app, size, snap_compare):
    async def run_before(pilot) -> None:
        await settle(app)
        await pilot.press("down", "down", "down", "exclamation_mark")
        dialog = app.screen
        assert isinstance(dialog, AlertDialog) and dialog.key == StreamKey.parse("usdm:BTCUSDT:1m")
        await pilot.pause(0.2)
        assert_on_screen(app, *ALERT_FIELDS)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


async def test_alert_dialog_at_80x24_keeps_its_buttons_with_the_longest_hint_and_an_error(app):
    from textual.widgets import Input, Select

    async with app.run_test(size=SMALL) as pilot:
        await settle(app)
        await pilot.press("down", "down", "down", "exclamation_mark")
        dialog = app.screen
        assert isinstance(dialog, AlertDialog)
        dialog.query_one("#alert-rule", Select).value = "change_pct"  # a two-line hint
        await pilot.pause()
        dialog.query_one("#alert-window", Input).value = "0"
        await pilot.click("#alert-ok")
        await pilot.pause(0.2)
        error = dialog.query_one("#alert-error")
        assert "window" in str(error.render()).lower()
        assert_on_screen(app, *ALERT_FIELDS, "#alert-error")


async def _some_alerts(app: KlineApp) -> None:
    for spec, rule, value, muted in (
        ("usdm:BTCUSDT:1m", "price_above", 100_000.0, False),
        ("usdm:ETHUSDT:1m", "change_pct", -1.5, False),
        ("spot:SOLUSDT:1s", "volume_spike", 4.0, False),
        ("coinm:BTCUSD_PERP:1m", "stale", 120.0, True),
    ):
        await app.recorder.add_alert(AlertConfig(stream=spec, rule=rule, value=value, muted=muted))


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x60"])
def test_alerts_list_sizes(app, size, snap_compare):
    from textual.widgets import DataTable

    async def run_before(pilot) -> None:
        await settle(app)
        await _some_alerts(app)
        await pilot.press("L")
        assert isinstance(app.screen, AlertsScreen)
        await pilot.pause(0.2)
        app.screen.update_view()
        await pilot.pause()
        assert_on_screen(app, "#alerts-box", "#alerts-table")
        table = app.screen.query_one("#alerts-table", DataTable)
        titles = [str(c.label) for c in table.columns.values()]
        # Stream, rule and state always; the rest only whole; all of them on a wide screen.
        assert titles[:3] == ["Stream", "Rule", "State"], titles
        if size == LARGE:
            assert len(titles) == 6, titles
        widths = sum(c.get_render_width(table) for c in table.columns.values())
        assert widths <= table.scrollable_content_region.width, (titles, widths)
        assert table.row_count == 4

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x60"])
def test_columns_screen_sizes(app, size, snap_compare):
    from textual.widgets import SelectionList

    async def run_before(pilot) -> None:
        await settle(app)
        await pilot.press("c")
        assert isinstance(app.screen, ColumnsScreen)
        await pilot.pause(0.2)
        assert_on_screen(app, "#columns-dialog", "#columns-list", "#columns-hint")
        options = app.screen.query_one("#columns-list", SelectionList)
        # Every column's line shows at once: nothing to scroll to.
        assert options.option_count == len(COLUMNS)
        assert options.virtual_size.height <= options.scrollable_content_region.height

    assert snap_compare(app, terminal_size=size, run_before=run_before)


async def test_alerts_list_shows_the_columns_that_fit_whole_as_the_terminal_resizes(app):
    from textual.widgets import DataTable

    def titles() -> list[str]:
        table = app.screen.query_one("#alerts-table", DataTable)
        widths = sum(c.get_render_width(table) for c in table.columns.values())
        assert widths <= table.scrollable_content_region.width  # none cut
        assert table.row_count == 4  # every alert, whatever the width
        return [str(c.label) for c in table.columns.values()]

    async def resized(pilot, size: tuple[int, int], count: int) -> None:
        await pilot.resize_terminal(*size)
        deadline = time.monotonic() + 10
        while len(titles()) != count:
            assert time.monotonic() < deadline, titles()
            await pilot.pause(0.05)

    everything = ["Stream", "Rule", "State", "Fired", "Last fired (UTC)", "Cooldown"]
    async with app.run_test(size=SMALL) as pilot:
        await settle(app)
        await _some_alerts(app)
        await pilot.press("L")
        assert isinstance(app.screen, AlertsScreen)
        await resized(pilot, SMALL, 4)
        assert titles() == everything[:4]
        await resized(pilot, LARGE, 6)
        assert titles() == everything
        await resized(pilot, (110, 30), 5)
        assert titles() == everything[:5]
        await pilot.press("down", "m")  # the keys still act on the alert under the cursor
        deadline = time.monotonic() + 10
        while not app.recorder.alert_rows()[1].muted:
            assert time.monotonic() < deadline, "not muted"
            await pilot.pause(0.05)


async def test_details_readout_at_80x24_leaves_out_volume_before_cutting_a_state_word(app):
    async with app.run_test(size=SMALL) as pilot:
        await _details_with_a_recorded_day(app, pilot, ("4",))
        screen = app.screen
        assert isinstance(screen, DetailsScreen)
        width = screen.query_one("#details-readout").size.width

        def readout() -> str:
            screen.update_view()
            plain = screen.readout.plain.rstrip()
            assert len(plain) <= width and "…" not in plain, plain  # nothing cut
            return plain

        # The crosshair on the forming hour, the day's first hour on screen too: no room to
        # say so, so it is left out rather than cut.
        assert readout().endswith(" forming")
        assert " C " in readout() and "(60 x 1m)" not in readout()  # the extras go first
        await pilot.press("home")
        deadline = time.monotonic() + 20
        while not (screen.at_first and screen._loading is None):
            assert time.monotonic() < deadline, "never reached the first recorded candle"
            await pilot.press("pageup")
            await pilot.pause(0.05)
        assert readout().endswith("◂ first")  # in short, where the words do not fit
        await pilot.resize_terminal(*LARGE)
        await pilot.pause(0.2)
        width = screen.query_one("#details-readout").size.width
        wide = readout()  # everything: the day's first hour is a partial one
        assert re.search(r" V \S+ \(\d+ x 1m\)  ◂ first recorded candle$", wide), wide

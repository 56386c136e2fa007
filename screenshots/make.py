"""Make the README's screenshots: the real app, in demo mode, against the built-in simulator.

    python screenshots/make.py                  # every shot: screenshots/<name>.svg
    python screenshots/make.py grouped details  # only these

The simulator's exchange clock starts at a fixed instant and runs in real time, so the pictures
show the same market every time while prices, rates and sparklines are live.

Each picture is a `Shot` in `SHOTS`, taken in that order on one running app, from the main screen
(the table in its default layout, the cursor on the fourth row) and back to it: a feature adds
its picture with `@shot("name")` on an `async def (app, pilot) -> None` that brings the screen to
what it shows; `make` saves the SVG after it and presses escape until the main screen is back.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kline_tui.config import AlertConfig, Settings
from kline_tui.model import StreamKey
from kline_tui.recorder.hub import StreamStatus
from kline_tui.ui.app import KlineApp
from kline_tui.ui.screens.add_streams import AddStreamsScreen
from kline_tui.ui.screens.alerts import AlertsScreen
from kline_tui.ui.screens.details import DetailsScreen
from kline_tui.ui.widgets.watch_table import Group

HERE = Path(__file__).resolve().parent
SIZE = (160, 45)
START_MS = 1_795_010_597_000  # 2026-11-18 14:03:17 UTC
WATCH = (
    "spot:BTCUSDT:1m",
    "spot:ETHUSDT:1m",
    "spot:SOLUSDT:1s",
    "usdm:BTCUSDT:1m",
    "usdm:ETHUSDT:1m",
    "usdm:SOLUSDT:1m",
    "usdm:BNBUSDT:5m",
    "usdm:XRPUSDT:15m",
    "coinm:BTCUSD_PERP:1m",
    "coinm:ETHUSD_PERP:1m",
)


def simulator(speed: float):
    from kline_tui.sim import Simulator

    return Simulator(speed=speed, start_ms=START_MS)


Setup = Callable[[KlineApp, Any], Awaitable[None]]


@dataclass(frozen=True)
class Shot:
    """One picture: `screenshots/<name>.svg`, after `setup` brought the app to it."""

    name: str
    setup: Setup


SHOTS: list[Shot] = []


def shot(name: str) -> Callable[[Setup], Setup]:
    """Register `setup` as the picture `name` (taken in the order registered)."""

    def register(setup: Setup) -> Setup:
        SHOTS.append(Shot(name, setup))
        return setup

    return register


@shot("main")
async def _main(app: KlineApp, pilot: Any) -> None:
    """The watch table, connections, recording and the event log."""


@shot("grouped")
async def _grouped(app: KlineApp, pilot: Any) -> None:
    """Rows grouped by market, each under a heading with its count of live streams."""
    app.table.group = Group.MARKET
    app.table.update_view()


@shot("add")
async def _add(app: KlineApp, pilot: Any) -> None:
    await pilot.press("a")
    assert isinstance(app.screen, AddStreamsScreen)
    dialog = app.screen
    await until(lambda: dialog.suggester.symbols, what="the symbol list")
    await pilot.press(*"adausdt, dot")


@shot("details")
async def _details(app: KlineApp, pilot: Any) -> None:
    await pilot.press("enter")
    assert isinstance(app.screen, DetailsScreen)
    await pilot.pause(0.6)  # its full history arrives from REST
    app.screen.update_view()


@shot("alerts")
async def _alerts(app: KlineApp, pilot: Any) -> None:
    """An alert that fired: the row marked `!`, the event-log line and the toast."""
    key = app.table.selected
    assert key is not None
    streams = app.recorder.streams
    await until(lambda: streams[key].forming is not None, what="a price")
    price = streams[key].forming.close  # type: ignore[union-attr]
    # A narrow band around the price: the simulated market leaves it one way or the other
    # within seconds, so one of the two fires (a price already past a level never does).
    for rule, level in (("price_above", price * 1.0001), ("price_below", price * 0.9999)):
        await app.recorder.add_alert(AlertConfig(stream=str(key), rule=rule, value=round(level, 1)))
    for spec, rule, value, muted in (
        ("usdm:ETHUSDT:1m", "change_pct", -1.5, False),
        ("spot:SOLUSDT:1s", "volume_spike", 4.0, False),
        ("usdm:XRPUSDT:15m", "stale", 120.0, True),
    ):
        await app.recorder.add_alert(AlertConfig(stream=spec, rule=rule, value=value, muted=muted))
    await until(
        lambda: any(r.fired for r in app.recorder.alert_rows()), timeout=120, what="a firing"
    )
    app.repaint()


@shot("alerts-list")
async def _alerts_list(app: KlineApp, pilot: Any) -> None:
    """The alerts screen (`L`): what each alert watches, whether it is muted, what it did."""
    if not app.recorder.alert_rows():
        await _alerts(app, pilot)
    await pilot.press("L")
    assert isinstance(app.screen, AlertsScreen)
    fired = next(i for i, r in enumerate(app.recorder.alert_rows()) if r.fired)
    await pilot.press(*["down"] * fired)  # the cursor on the alert that fired
    app.screen.update_view()


@shot("details-1h")
async def _details_resampled(app: KlineApp, pilot: Any) -> None:
    """Three recorded days of 1m candles shown as 1h, with volume and the crosshair's readout."""
    from kline_tui.store.history import backfill

    key = app.table.selected
    pipeline = app.pipeline
    assert key is not None and pipeline is not None
    forming = app.recorder.streams[key].forming
    assert forming is not None
    await app.recorder.flush()  # what the app recorded is on disk before the backfill looks
    last = key.interval.prev_open(forming.open_time)
    first = key.interval.shift(last, -3 * 1440 + 1)  # three days: a screen of hours
    await backfill(pipeline.dataset, key, pipeline.rest, first, last)
    await pilot.press("enter")
    screen = app.screen
    assert isinstance(screen, DetailsScreen)
    for name in ("4", "left", "left", "left"):
        await pilot.press(name)
        await until(lambda: screen._loading is None, what="the dataset read")
    screen.update_view()
    await pilot.pause(0.3)


async def until(predicate, timeout: float = 30.0, what: str = "the app") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"make.py: timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def make(out: Path, names: list[str] | None = None) -> list[Path]:
    """Take the shots named (all by default) into `out`; returns the files written."""
    unknown = set(names or ()) - {s.name for s in SHOTS}
    if unknown:
        raise SystemExit(f"make.py: no such shot: {', '.join(sorted(unknown))}")
    work = Path(tempfile.gettempdir()) / "kline-tui-demo"  # shown on screen: a tidy name
    shutil.rmtree(work, ignore_errors=True)
    settings = Settings(
        config_path=work / "config.toml",
        config_exists=True,
        data_dir=work / "demo-data",
        watch=tuple(StreamKey.parse(s) for s in WATCH),
    )
    app = KlineApp(settings, demo_speed=1.0, simulator_factory=simulator, save_watch_list=False)
    made = []
    try:
        async with app.run_test(size=SIZE) as pilot:
            await app.wait_started()
            if not app.running:
                raise SystemExit(
                    "make.py: the app did not start: "
                    + "; ".join(e.message for e in app.events.recent)
                )
            streams = app.pipeline.hub.streams
            await until(
                lambda: all(
                    s.status is StreamStatus.LIVE and len(s.closed) >= 60 for s in streams.values()
                ),
                what="every stream to be live with its history",
            )
            await asyncio.sleep(6)  # a few seconds of trading: rates, colours, a flush
            await pilot.press("down", "down", "down")
            for taken in SHOTS:
                if names and taken.name not in names:
                    continue
                await taken.setup(app, pilot)
                # The exchange clock was set to a fixed past instant, so "lag" would show that
                # offset rather than a network delay: show a typical loopback figure instead.
                app.hold_display = True
                for status in app.pipeline.hub.connection_status():
                    status.lag_ms = 3.0
                app.repaint()
                await pilot.pause(0.3)
                made.append(Path(app.save_screenshot(f"{taken.name}.svg", path=out)))
                app.hold_display = False
                while len(app.screen_stack) > 1:
                    await pilot.press("escape")
                app.table.group = Group.NONE
            await pilot.press("q")
            await until(lambda: app.return_code is not None, what="the app to quit")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return made


def main() -> int:
    for path in asyncio.run(make(HERE, sys.argv[1:] or None)):
        print(path.relative_to(HERE.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())

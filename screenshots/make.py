"""Make the README's screenshots: the real app, in demo mode, against the built-in simulator.

    python screenshots/make.py            # writes screenshots/{main,add,details}.svg

The simulator's exchange clock starts at a fixed instant and runs in real time, so the pictures
show the same market every time while prices, rates and sparklines are live.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from kline_tui.config import Settings
from kline_tui.model import StreamKey
from kline_tui.recorder.hub import StreamStatus
from kline_tui.ui.app import KlineApp
from kline_tui.ui.screens.add_streams import AddStreamsScreen
from kline_tui.ui.screens.details import DetailsScreen

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


async def until(predicate, timeout: float = 30.0, what: str = "the app") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"make.py: timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def make(out: Path) -> list[Path]:
    work = Path(tempfile.gettempdir()) / "kline-tui-demo"  # shown on screen: a tidy name
    shutil.rmtree(work, ignore_errors=True)
    settings = Settings(
        config_path=work / "config.toml",
        config_exists=True,
        data_dir=work / "demo-data",
        watch=tuple(StreamKey.parse(s) for s in WATCH),
    )
    app = KlineApp(settings, demo_speed=1.0, simulator_factory=simulator)
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
            # The exchange clock was set to a fixed past instant, so "lag" would show that offset
            # rather than a network delay: show a typical loopback figure instead.
            app.hold_display = True
            for status in app.pipeline.hub.connection_status():
                status.lag_ms = 3.0
            app.repaint()
            await pilot.pause(0.3)
            made.append(Path(app.save_screenshot("main.svg", path=out)))

            await pilot.press("a")
            assert isinstance(app.screen, AddStreamsScreen)
            await until(lambda: app.screen.suggester.symbols, what="the symbol list")
            await pilot.press(*"adausdt, dot")
            await pilot.pause(0.3)
            made.append(Path(app.save_screenshot("add.svg", path=out)))
            await pilot.press("escape")

            await pilot.press("enter")
            assert isinstance(app.screen, DetailsScreen)
            await pilot.pause(0.6)  # its full history arrives from REST
            app.screen.update_view()
            await pilot.pause(0.1)
            made.append(Path(app.save_screenshot("details.svg", path=out)))
            await pilot.press("escape", "q")
            await until(lambda: app.return_code is not None, what="the app to quit")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return made


def main() -> int:
    for path in asyncio.run(make(HERE)):
        print(path.relative_to(HERE.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())

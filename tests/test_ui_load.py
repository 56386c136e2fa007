"""1,000 streams at the simulator's full rate: the UI answers keys while ~3,600 updates/s arrive.

The simulator runs in its own process (as an exchange would), so the app's event loop carries only
what a real session carries: decoding, the ledger, the sink and the UI. A key is answered when the
table has been painted with its effect: the time from posting the key event to the first line the
compositor draws after it.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
import tomllib

import pytest
from textual import events

from kline_tui.binance.markets import Endpoints
from kline_tui.config import Settings
from kline_tui.model import Interval, Market, StreamKey
from kline_tui.recorder.hub import StreamStatus
from kline_tui.ui.app import KlineApp
from kline_tui.ui.widgets.watch_table import Sort

# Futures push every 250 ms and spot every 2 s: 900 x 4 + 100 x 0.5 = 3,650 updates a second.
COUNTS = {Market.USDM: 600, Market.COINM: 300, Market.SPOT: 100}


@pytest.fixture
def sim_process():
    """`python -m kline_tui.sim` at real-time speed; yields its endpoints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "kline_tui.sim", "--speed", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        for line in proc.stdout:
            if line.strip() == "ready":
                break
            lines.append(line)
        doc = tomllib.loads("".join(lines))
        yield {Market.parse(m): Endpoints(t["ws"], t["rest"]) for m, t in doc["endpoints"].items()}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def thousand_streams() -> list[StreamKey]:
    keys = []
    for market, count in COUNTS.items():
        suffix = "USD_PERP" if market is Market.COINM else "USDT"
        keys += [StreamKey(market, f"S{i:04d}{suffix}", Interval.M1) for i in range(1, count + 1)]
    return keys


async def test_keys_are_answered_quickly_with_1000_streams_at_full_rate(sim_process, tmp_path):
    keys = thousand_streams()
    assert len(keys) == 1000
    settings = Settings(
        config_path=tmp_path / "config.toml",
        config_exists=True,
        data_dir=tmp_path / "data",
        watch=tuple(keys),
        endpoints=sim_process,
    )
    app = KlineApp(settings)
    async with app.run_test(size=(160, 45)) as pilot:
        await app.wait_started()
        streams = app.pipeline.hub.streams
        deadline = time.monotonic() + 30
        while sum(s.status is StreamStatus.LIVE for s in streams.values()) < 990:
            assert time.monotonic() < deadline, "streams did not go live"
            await asyncio.sleep(0.1)
        await asyncio.sleep(5.5)  # a full window for the message rate
        rate = sum(c.frames_per_s() for c in app.pipeline.hub.connection_status())
        table = app.table
        updates_before = sum(s.updates for s in streams.values())
        started = time.monotonic()

        async def answer(key: str, character: str | None = None) -> float:
            generation = table.generation
            t0 = time.perf_counter()
            app.post_message(events.Key(key, character))
            while table.painted_generation <= generation:
                assert time.perf_counter() - t0 < 10, f"{key} was never answered"
                await asyncio.sleep(0.001)
            return time.perf_counter() - t0

        timings: dict[str, list[float]] = {}
        plan = (
            [("down", None)] * 10
            + [("pagedown", None)] * 3
            + [("up", None)] * 5
            + [("s", "s")] * 7
            + [("S", "S"), ("end", None), ("home", None)]
        )
        for key, character in plan:
            timings.setdefault(key, []).append(await answer(key, character))
            await asyncio.sleep(0.05)  # a fast typist, not a flood
        assert table.sort is Sort.LIST and table.reverse  # seven sorts went round; S reversed it
        await pilot.press("slash")
        for character in "s01":
            timings.setdefault("filter", []).append(await answer(character, character))
        assert table.order and all("S01" in k.symbol for k in table.order)
        await pilot.press("enter")
        timings.setdefault("escape", []).append(await answer("escape"))
        assert len(table.order) == 1000

        elapsed = time.monotonic() - started
        arrived = (sum(s.updates for s in streams.values()) - updates_before) / elapsed
        everything = [t for ts in timings.values() for t in ts]
        median = statistics.median(everything)
        p95 = sorted(everything)[int(len(everything) * 0.95) - 1]
        print(
            f"\n1,000 streams, {rate:,.0f} msg/s before and {arrived:,.0f} updates/s "
            "during the keys: "
            f"key-to-answer median {median * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
            f"max {max(everything) * 1000:.0f} ms over {len(everything)} keys; "
            + ", ".join(f"{k} {statistics.median(v) * 1000:.0f} ms" for k, v in timings.items())
        )
        assert arrived > 2500, "the load did not arrive: this measured an idle app"
        assert median < 1.0
        await pilot.press("q")

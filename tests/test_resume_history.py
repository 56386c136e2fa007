"""A recorder killed after its first live candles reached the disk but before their history did:
the restart must still fetch that history (store.starts), not begin the dataset at the first
live row."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import polars as pl

from kline_tui.model import StreamKey

from .checks import assert_exact_recording, read_dataset

KLINE_TUI = str(Path(sys.executable).parent / "kline-tui")
HISTORY = 30


def _config(sim, data_dir: Path, watch: list[str]) -> str:
    lines = [f'data_dir = "{data_dir}"', "watch = [" + ", ".join(f'"{w}"' for w in watch) + "]"]
    for market, ep in sim.endpoints.items():
        lines += [f"[endpoints.{market.value}]", f'ws = "{ep.ws}"', f'rest = "{ep.rest}"']
    lines += ["[recorder]", "flush_age_s = 0.5", f"history = {HISTORY}", "reconnect_max_s = 2"]
    return "\n".join(lines) + "\n"


async def _start(config: Path, log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        KLINE_TUI, "record", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=open(log, "a"),
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


async def _wait_for(predicate, timeout: float, what: str) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_history_lost_to_a_kill_is_fetched_by_the_restart(tmp_path):
    from kline_tui.sim import Simulator

    key = StreamKey.parse("usdm:BTCUSDT:1m")
    data, log = tmp_path / "data", tmp_path / "recorder.log"
    config = tmp_path / "c.toml"
    async with Simulator(speed=60.0, offset_ms=3_600_000) as sim:
        config.write_text(_config(sim, data, [str(key)]))
        first = await _start(config, log)
        await _wait_for(lambda: "watching 1 streams" in log.read_text(), 20, "the start")
        sim.faults.rest_fail(500, count=10**6)  # from now on no history can be fetched
        await _wait_for(lambda: list(data.rglob("*.parquet")), 20, "live rows on disk")
        await asyncio.sleep(1.0)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        live = read_dataset(data)
        first_live = live["open_time"].dt.epoch("ms").min()
        assert live.height < HISTORY, "the history was written before the kill: nothing to test"

        sim.faults.reset()
        second = await _start(config, log)
        await asyncio.sleep(6)
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 30) == 0, log.read_text()[-3000:]
    df = read_dataset(data)
    assert_exact_recording(df, [key], min_rows=HISTORY)
    head = df["open_time"].dt.epoch("ms").min()
    assert head <= first_live - (HISTORY - 1) * 60_000, (
        f"the dataset begins {(first_live - head) // 60_000} candles before the first live row, "
        f"not {HISTORY}"
    )
    assert df.filter(pl.col("open_time").dt.epoch("ms") < first_live)["source"].unique().to_list() == ["rest"]

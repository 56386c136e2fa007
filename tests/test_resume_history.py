"""A recorder killed after its first live candles reached the disk but before their history did:
the restart must still fetch that history (store.starts), not begin the dataset at the first
live row."""

from __future__ import annotations

import asyncio
import signal

import polars as pl

from kline_tui.model import StreamKey

from .checks import assert_exact_recording
from .datasets import read_dataset
from .support import start_record, wait_until, write_config

HISTORY = 30


async def test_history_lost_to_a_kill_is_fetched_by_the_restart(tmp_path):
    from kline_tui.sim import Simulator

    key = StreamKey.parse("usdm:BTCUSDT:1m")
    data, log = tmp_path / "data", tmp_path / "recorder.log"
    config = tmp_path / "c.toml"
    async with Simulator(speed=60.0, offset_ms=3_600_000) as sim:
        recorder = {"flush_age_s": 0.5, "history": HISTORY, "reconnect_max_s": 2}
        write_config(config, sim.endpoints, data_dir=data, watch=[str(key)], recorder=recorder)
        first = await start_record(config, log=log)
        await wait_until(lambda: "watching 1 streams" in log.read_text(), 20, "the start")
        sim.faults.rest_fail(500, count=10**6)  # from now on no history can be fetched
        await wait_until(lambda: list(data.rglob("*.parquet")), 20, "live rows on disk")
        await asyncio.sleep(1.0)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        live = read_dataset(data)
        first_live = live["open_time"].dt.epoch("ms").min()
        assert live.height < HISTORY, "the history was written before the kill: nothing to test"

        sim.faults.reset()
        second = await start_record(config, log=log)
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
    assert df.filter(pl.col("open_time").dt.epoch("ms") < first_live)[
        "source"
    ].unique().to_list() == ["rest"]

"""Shared fixtures: an in-process simulator on loopback, and checks of a recorded dataset."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import polars as pl
import pytest

from kline_tui.model import CANDLE_COLUMNS, StreamKey

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def sim():
    """A simulator whose clock runs 60x fast and an hour ahead of the local clock."""
    from kline_tui.sim import Simulator

    simulator = Simulator(speed=60.0, offset_ms=3_600_000)
    await simulator.start()
    yield simulator
    await simulator.stop()


def read_dataset(data_dir: Path) -> pl.DataFrame:
    return pl.scan_parquet(f"{data_dir}/**/*.parquet", hive_partitioning=True).collect()


def assert_exact_recording(df: pl.DataFrame, keys: list[StreamKey], min_rows: int = 2) -> None:
    """Every row is the simulator's candle; no duplicates; no gap; each key has >= min_rows."""
    from kline_tui.sim import expected_candle

    assert set(df.columns) == set(CANDLE_COLUMNS) | {"market", "interval", "date"}
    for key in keys:
        rows = df.filter(
            (pl.col("market") == key.market.value)
            & (pl.col("interval") == key.interval.path_label)
            & (pl.col("symbol") == key.symbol)
        ).sort("open_time")
        assert rows.height >= min_rows, f"{key}: only {rows.height} rows"
        opens = rows["open_time"].dt.epoch("ms").to_list()
        assert len(set(opens)) == len(opens), f"{key}: duplicates"
        for a, b in zip(opens, opens[1:]):
            assert key.interval.next_open(a) == b, f"{key}: gap after {a}"
        as_ms = rows.with_columns(
            pl.col("open_time").dt.epoch("ms"), pl.col("close_time").dt.epoch("ms")
        ).select(CANDLE_COLUMNS[1:])
        for got in as_ms.iter_rows():
            want = expected_candle(key.market, key.symbol, key.interval, got[0]).as_row()
            assert got == want, f"{key} at {got[0]}: {got} != {want}"


def cli_env() -> dict[str, str]:
    """Environment for running kline-tui in a subprocess: isolated config and data folders."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


PYTHON = sys.executable

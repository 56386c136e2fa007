"""Checks of a recorded dataset against the simulator's candles."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from kline_tui.model import CANDLE_COLUMNS, PARQUET_SCHEMA, StreamKey


def read_dataset(data_dir: Path) -> pl.DataFrame:
    return pl.scan_parquet(f"{data_dir}/**/*.parquet", hive_partitioning=True).collect()


def assert_exact_recording(df: pl.DataFrame, keys: list[StreamKey], min_rows: int = 2) -> None:
    """Every row is the simulator's candle; no duplicates; no gap; each key has >= min_rows."""
    from kline_tui.sim import expected_candle

    assert set(df.columns) == set(PARQUET_SCHEMA) | {"market", "interval", "date"}
    assert set(df["source"].unique()) <= {"ws", "rest", "sim"}  # sim: the demo's rows
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

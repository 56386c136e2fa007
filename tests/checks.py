"""Checks of a recorded dataset against the simulator's candles."""

from __future__ import annotations

import itertools

import polars as pl

from kline_tui.model import Interval, StreamKey
from kline_tui.store.schema import CANDLE_COLUMNS, PARQUET_SCHEMA

from .datasets import stream_rows


def assert_exact_recording(df: pl.DataFrame, keys: list[StreamKey], min_rows: int = 2) -> None:
    """Every row is the simulator's candle; no duplicates; no gap; each key has >= min_rows."""
    assert set(df.columns) == set(PARQUET_SCHEMA) | {"market", "interval", "date"}
    assert set(df["source"].unique()) <= {"ws", "rest", "sim"}  # sim: the demo's rows
    for key in keys:
        opens = assert_matches_simulator(df, key)
        assert len(opens) >= min_rows, f"{key}: only {len(opens)} rows"
        for a, b in itertools.pairwise(opens):
            assert key.interval.next_open(a) == b, f"{key}: gap after {a}"


def assert_matches_simulator(df: pl.DataFrame, key: StreamKey) -> list[int]:
    """Every row of `key` in `df` is the simulator's candle, once; returns its open times."""
    from kline_tui.sim import expected_candle

    rows = stream_rows(df, key).sort("open_time")
    opens = rows["open_time"].dt.epoch("ms").to_list()
    assert len(opens) == len(set(opens)), f"{key}: duplicates"
    as_ms = rows.with_columns(
        pl.col("open_time").dt.epoch("ms"), pl.col("close_time").dt.epoch("ms")
    )
    for got in as_ms.select(CANDLE_COLUMNS[1:]).iter_rows():
        want = expected_candle(key.market, key.symbol, key.interval, got[0]).as_row()
        assert got == want, f"{key} at {got[0]}: {got} != {want}"
    return opens


def contiguous(interval: Interval, opens: list[int]) -> bool:
    return all(interval.next_open(a) == b for a, b in itertools.pairwise(opens))

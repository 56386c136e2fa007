"""The dataset's columns and their types: the on-disk contract (README, "The data on disk").

`market`, `interval` and `date` are not columns of a file: they come from the path.
"""

from __future__ import annotations

import polars as pl

__all__ = ["CANDLE_COLUMNS", "PARQUET_SCHEMA"]

_MS_UTC = pl.Datetime("ms", "UTC")

PARQUET_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "open_time": _MS_UTC,
        "close_time": _MS_UTC,
        "open": pl.Float64(),
        "high": pl.Float64(),
        "low": pl.Float64(),
        "close": pl.Float64(),
        "volume": pl.Float64(),
        "quote_volume": pl.Float64(),
        "taker_buy_volume": pl.Float64(),
        "taker_buy_quote_volume": pl.Float64(),
        "trades": pl.Int64(),
        # Provenance: `ws` (received live), `rest` (backfilled), `archive` (imported), `sim`
        # (the demo's simulator).
        "source": pl.String(),
    }
)

# The candle's own columns, in order: everything but the provenance.
CANDLE_COLUMNS: tuple[str, ...] = tuple(PARQUET_SCHEMA)[:-1]
